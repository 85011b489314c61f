import t from 'tap'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Spool } from '../../agent/events/spool.js'
import { makeEvent, type AgentEvent } from '../../agent/protocol/event.js'

/** The kernel log seq an io-error event covers (the tests number their events by it). */
const seqOf = (e: AgentEvent): number | undefined => (e.kind === 'io-error' ? e.data.kmsg?.firstSeq : undefined)

t.test('spooled events come back oldest first and go once removed', async (t) => {
  const dir = t.testdir()
  const spool = new Spool(dir)
  const a = makeEvent('boot', 'n1', { record: { result: 'ok' } })
  const b = makeEvent('fallback', 'n1', { reason: 'no cache' })
  await spool.append(a, b)
  const got = await spool.peek(10)
  t.same(got.map((s) => s.event.id), [a.id, b.id])
  await spool.remove(got.map((s) => s.file))
  t.same(await spool.peek(10), [])
})

t.test('the bound drops the oldest and counts them as lost', async (t) => {
  const spool = new Spool(t.testdir(), { maxEvents: 3 })
  const evs = Array.from({ length: 5 }, (_, i) => makeEvent('io-error', 'n1', { kmsg: { firstSeq: i } }))
  for (const e of evs) await spool.append(e)
  const left = await spool.peek(10)
  t.same(left.map((s) => seqOf(s.event)), [2, 3, 4])
  t.equal(await spool.lostCount(), 2)
  await spool.resetLost(2)
  t.equal(await spool.lostCount(), 0)
})

t.test('a malformed spool file is removed and counted, never delivered', async (t) => {
  const dir = t.testdir()
  const spool = new Spool(dir)
  await spool.append(makeEvent('boot', 'n1', { record: {} }))
  await writeFile(join(dir, '0000000000000001-000000-00000000-0000-0000-0000-000000000000.json'), '{not json')
  const got = await spool.peek(10)
  t.equal(got.length, 1)
  t.equal(await spool.lostCount(), 1)
  t.equal((await readdir(dir)).filter((f) => f.endsWith('.json') && f !== 'lost.json').length, 1)
})
