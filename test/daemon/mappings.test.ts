/**
 * When a loop device was bound, from the kernel's own lines (mappings.ts):
 * recorded lines as this kernel writes them, and a scripted ring for the
 * start-up read.
 */
import t from 'tap'
import { loopBoundBy, MappingTimes, prescanMappings } from '../../agent/daemon/mappings.js'
import { parseKmsgRecord, type KmsgRecord } from '../../agent/daemon/kmsg.js'

const rec = (line: string): KmsgRecord => {
  const r = parseKmsgRecord(line)
  if (!r) throw new Error(`bad record ${line}`)
  return r
}
// As this kernel (6.18) logs them: binding a file sets the capacity from 0; detaching logs nothing.
const bound = (seq: number, usec: number, dev = 'loop3') => rec(`6,${seq},${usec},-;${dev}: detected capacity change from 0 to 16384\n`)
const err = (seq: number, usec: number) => rec(`3,${seq},${usec},-;SQUASHFS error: Unable to read page, block 15d648, size 18938\n`)

t.test('a binding line names its device; a resize, a user record or another line does not', async (t) => {
  t.equal(loopBoundBy(bound(1, 10)), 'loop3')
  t.equal(loopBoundBy(rec('6,2,20,-;loop3: detected capacity change from 16384 to 32768\n')), undefined, 'a resize of a bound device')
  t.equal(loopBoundBy(rec('14,3,30,-;loop3: detected capacity change from 0 to 16384\n')), undefined, 'written by a process (facility user)')
  t.equal(loopBoundBy(rec('6,4,40,-;sda: detected capacity change from 0 to 16384\n')), undefined, 'not a loop device')
})

t.test('a record before the binding it would be tied to is refused with the reason; after it, accepted', async (t) => {
  const m = new MappingTimes()
  for (const r of [err(1, 1_000_000), bound(2, 5_000_000), err(3, 6_000_000)]) m.note(r)
  t.match(m.predates('loop3', 1_000_000), /^logged at 1\.000000 s, before loop3 was bound to its current file \(5\.000000 s\)$/)
  t.equal(m.predates('loop3', 6_000_000), undefined)
  m.note(bound(4, 9_000_000))
  t.ok(m.predates('loop3', 6_000_000), 'a new binding: the older records are not its own')
})

t.test('a binding whose line has left the ring: only records after the first sight are its own', async (t) => {
  const m = new MappingTimes()
  m.note(err(100, 7_000_000))
  m.seenBound(['loop5'])
  t.match(m.predates('loop5', 7_000_000), /no longer in the kernel log; first seen at 7\.000000 s/)
  m.note(err(101, 8_000_000))
  t.equal(m.predates('loop5', 8_000_000), undefined)
  t.ok(m.predates('loop6', 8_000_000), 'a device met for the first time by a record: that record is not tied to it')
  t.equal(m.predates('loop6', 8_000_001), undefined, 'later ones are')
})

t.test('the start-up read takes the whole ring to its end, and marks what is bound now', async (t) => {
  const lines = [err(0, 1_000), bound(1, 2_000), err(2, 3_000)].map((r) => `${r.level},${r.seq},${r.usec},-;${r.message}\n`)
  let opened = 0
  const openDevice = async () => {
    opened++
    const steps = [...lines]
    return {
      read: async (buf: Buffer) => {
        const s = steps.shift()
        if (s === undefined) throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' })
        return { bytesRead: buf.write(s), buffer: buf }
      },
      close: async () => undefined,
    }
  }
  const m = new MappingTimes()
  const r = await prescanMappings(m, { openDevice, sysBlock: '/nonexistent' })
  t.same(r, { records: 3 })
  t.equal(opened, 1)
  t.ok(m.predates('loop3', 1_000), 'the binding at 2 ms is known')
  t.equal(m.predates('loop3', 3_000), undefined)
})
