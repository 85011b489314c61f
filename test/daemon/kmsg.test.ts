import t from 'tap'
import { open } from 'node:fs/promises'
import { constants } from 'node:fs'
import { parseKmsgRecord, readKmsg, unescapeKmsg, type KmsgItem } from '../../agent/daemon/kmsg.js'
import { classify } from '../../agent/daemon/classify.js'
import { gate } from '../helpers/capability.js'

t.test('a record splits into facility, level, seq, time, flags, message and dictionary', async (t) => {
  const r = parseKmsgRecord('11,343,427138241,-,caller=T42;SQUASHFS error: bad\\x0a\\xe2\\x82\\xac x\n SUBSYSTEM=block\n DEVICE=b7:0\n')
  t.same(r, { facility: 1, level: 3, seq: 343, usec: 427138241, flags: '-', message: 'SQUASHFS error: bad\n€ x', dict: { SUBSYSTEM: 'block', DEVICE: 'b7:0' } })
  t.equal(parseKmsgRecord('3,1,2,c;start of a line')?.flags, 'c')
  t.equal(parseKmsgRecord('3,1,2,+;fragment')?.flags, '+')
})

t.test('malformed records are undefined, never an exception', async (t) => {
  for (const raw of ['', ';', 'x,1,2,-;m', '3,1,2;m', '3,-1,2,-;m', '3,1,2,--;m', 'no semicolon', '3,99999999999999999999,1,-;m', '3,1,1e5,-;m']) {
    t.equal(parseKmsgRecord(raw), undefined, JSON.stringify(raw))
  }
})

t.test('unescape keeps text without escapes and decodes byte sequences', async (t) => {
  t.equal(unescapeKmsg('plain'), 'plain')
  t.equal(unescapeKmsg('a\\x5cb\\x'), 'a\\b\\x')
  t.equal(unescapeKmsg('\\xff'), '\ufffd')
})

// mulberry32: a small seeded PRNG, so a failure reproduces.
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296
}

const CORPUS = [
  '3,343,427138241,-;SQUASHFS error: xz decompression failed, data probably corrupt\n',
  '3,346,427155693,-;SQUASHFS error: Failed to read block 0x18b44: -5\n',
  '3,347,427157041,-;SQUASHFS error: Unable to read data cache entry [18b44]\n',
  '3,348,427158370,-;SQUASHFS error: Unable to read page, block 18b44, size 18b34\n',
  '3,12,99,-;I/O error, dev loop0, sector 2048 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2\n SUBSYSTEM=block\n DEVICE=b7:0\n',
  '3,13,100,-;Buffer I/O error on dev sda1, logical block 123, async page read\n',
  '2,14,101,-;EXT4-fs error (device sda2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0\n',
  '1,15,102,-;XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0x1a/0x2b0, inode 0x83\n',
  '6,336,1494858,-;EXT4-fs (vda): mounted filesystem 0000 r/w without journal. Quota mode: none.\n',
  '12,400,5,-;SQUASHFS error: written by a process\n',
]

t.test('10,000 random and mutated records: no crash, each classified or ignored', async (t) => {
  const rnd = prng(20261121)
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)] as T
  const ALPHABET = ' ,;-+c\\x0123456789abcdefABCDEF=\n\t\u0000\u00ff€SQUASHFS error:I/O'
  const mutate = (s: string): string => {
    const chars = [...s]
    const n = 1 + Math.floor(rnd() * 4)
    for (let i = 0; i < n; i++) {
      const at = Math.floor(rnd() * (chars.length + 1))
      switch (Math.floor(rnd() * 6)) {
        case 0: chars.splice(at, 1); break
        case 1: chars.splice(at, 0, pick([...ALPHABET])); break
        case 2: chars[at] = pick([...ALPHABET]); break
        case 3: chars.length = at; break
        case 4: chars.splice(at, 0, ...'\\x' + Math.floor(rnd() * 256).toString(16).padStart(2, '0')); break
        default: chars.splice(at, 0, ...String(Math.floor(rnd() * 1e21))); break
      }
    }
    return chars.join('')
  }
  const random = (): string => Array.from({ length: Math.floor(rnd() * 300) }, () => pick([...ALPHABET])).join('')
  let parsed = 0
  let classified = 0
  let ignored = 0
  const N = 10_000
  for (let i = 0; i < N; i++) {
    const raw = i % 10 === 0 ? random() : i % 10 === 1 ? pick(CORPUS) : mutate(pick(CORPUS))
    const r = parseKmsgRecord(raw)
    if (!r) {
      ignored++
      continue
    }
    parsed++
    if (!(Number.isSafeInteger(r.seq) && r.seq >= 0 && r.facility >= 0 && r.level >= 0 && r.level <= 7)) t.fail(`bad fields from ${JSON.stringify(raw)}`)
    const c = classify(r)
    if (c === undefined) ignored++
    else if (c.kind === 'squashfs-error' || c.kind === 'io-error') classified++
    else t.fail(`unknown kind from ${JSON.stringify(raw)}`)
    if (c && r.facility !== 0) t.fail(`non-kernel record classified: ${JSON.stringify(raw)}`)
  }
  t.equal(classified + ignored, N, 'every record was classified or ignored')
  t.ok(parsed > 3000, `a good share parsed (${parsed})`)
  t.ok(classified > 1000, `and many still classified after mutation (${classified})`)
  t.comment(`${N} records: ${parsed} parsed, ${classified} classified, ${ignored} ignored`)
})

/** A scripted device: each step is a record text, an errno code, or EOF (''), then EAGAIN forever. */
const scripted = (opens: (string | { code: string })[][]) => {
  let n = 0
  return async () => {
    const steps = [...(opens[n++] ?? [])]
    return {
      read: async (buf: Buffer) => {
        const s = steps.shift()
        if (s === undefined) throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' })
        if (typeof s !== 'string') throw Object.assign(new Error(s.code), { code: s.code })
        const len = buf.write(s)
        return { bytesRead: len, buffer: buf }
      },
      close: async () => undefined,
    }
  }
}

const collect = async (gen: AsyncGenerator<KmsgItem>, until: (items: KmsgItem[]) => boolean): Promise<KmsgItem[]> => {
  const items: KmsgItem[] = []
  for await (const i of gen) {
    items.push(i)
    if (until(items) || items.length > 1000) break
  }
  return items
}

t.test('an overrun (EPIPE and a seq gap) is counted as lost and reading goes on', async (t) => {
  const ac = new AbortController()
  const items = await collect(readKmsg({
    afterSeq: 9,
    pollMs: 1,
    signal: ac.signal,
    openDevice: scripted([['3,10,1,-;a\n', { code: 'EPIPE' }, '3,15,2,-;b\n', 'garbage', '3,16,3,-;c\n']]),
  }), (i) => i.some((x) => x.type === 'idle'))
  ac.abort()
  t.same(items.filter((i) => i.type !== 'opened' && i.type !== 'idle').map((i) => (i.type === 'record' ? i.record.seq : i.type === 'lost' ? `lost ${i.count} ${i.fromSeq}-${i.toSeq}` : i.type)),
    [10, 'lost 4 11-14', 15, 'malformed', 16])
})

t.test('a closed device is reopened and records already read are not repeated', async (t) => {
  const ac = new AbortController()
  const items = await collect(readKmsg({
    pollMs: 1,
    signal: ac.signal,
    openDevice: scripted([['3,1,1,-;a\n', '3,2,1,-;b\n', ''], ['3,1,1,-;a\n', '3,2,1,-;b\n', '3,3,1,-;c\n']]),
  }), (i) => i.filter((x) => x.type === 'opened').length === 2 && i.some((x) => x.type === 'idle'))
  ac.abort()
  t.same(items.filter((i) => i.type === 'record').map((i) => (i.type === 'record' ? i.record.seq : 0)), [1, 2, 3])
  t.match(items.filter((i) => i.type === 'opened').map((i) => (i.type === 'opened' ? i.reason : '')), ['start', 'end of file'])
})

t.test('the real /dev/kmsg: records after the resume point only, written ones as facility user, abort ends reading', gate('root', 'kmsg'), async (t) => {
  // Find the current last seq.
  const ac1 = new AbortController()
  const first = await collect(readKmsg({ signal: ac1.signal, pollMs: 10 }), (i) => i.some((x) => x.type === 'idle'))
  ac1.abort()
  const records = first.flatMap((i) => (i.type === 'record' ? [i.record] : []))
  t.ok(records.length > 0, 'the ring has records')
  const last = records[records.length - 1]!.seq
  const marker = `boot-agent kmsg test ${process.pid} ${Date.now()}`
  const fh = await open('/dev/kmsg', constants.O_WRONLY)
  await fh.write(`<3>${marker}\n`)
  await fh.close()
  const ac = new AbortController()
  const started = Date.now()
  const items = await collect(readKmsg({ afterSeq: last, signal: ac.signal, pollMs: 10 }), (i) => i.some((x) => x.type === 'record' && x.record.message.includes(marker)))
  const got = items.flatMap((i) => (i.type === 'record' ? [i.record] : []))
  t.ok(got.every((r) => r.seq > last), 'nothing at or before the resume point')
  const mine = got.find((r) => r.message.includes(marker))
  t.equal(mine?.facility, 1, 'a record written by a process has facility user')
  t.equal(mine?.level, 3)
  // Abort while idle: the generator must end promptly (bounded by one poll).
  const gen = readKmsg({ afterSeq: mine?.seq ?? last, signal: ac.signal, pollMs: 50 })
  const pending = gen.next()
  setTimeout(() => ac.abort(), 100)
  for (let r = await pending; !r.done; r = await gen.next()) { /* drain until the abort ends it */ }
  t.ok(Date.now() - started < 10_000, 'reading ended after abort')
})

