import t from 'tap'
import { Coalescer, stableId } from '../../agent/events/coalesce.js'

const input = (seq: number, device: string, cls = 'decompression-failed', ms = seq) => ({
  kind: 'squashfs-error' as const,
  class: cls,
  device,
  seq,
  time: new Date(1_700_000_000_000 + ms),
  message: `SQUASHFS error: ${cls}`,
  fields: { source: 'squashfs' },
  block: { offset: seq * 100 },
})

t.test('a flood of one error on one device becomes one event with count, times and seq ranges', async (t) => {
  const c = new Coalescer()
  for (const s of [10, 11, 12, 15, 16]) c.add(input(s, 'loop0'))
  t.equal(c.pending, 5)
  const [e, ...rest] = c.drain('n1', 'boot-1')
  t.equal(rest.length, 0)
  t.match(e, { kind: 'squashfs-error', node: 'n1', data: { count: 5, device: 'loop0', class: 'decompression-failed' } })
  t.same(e!.data.kmsg, { bootId: 'boot-1', firstSeq: 10, lastSeq: 16, seqs: [[10, 12], [15, 16]] })
  t.equal(e!.data.firstTime, new Date(1_700_000_000_010).toISOString())
  t.equal(e!.data.lastTime, new Date(1_700_000_000_016).toISOString())
  t.equal((e!.data.blocks as unknown[]).length, 5)
  t.equal(c.pending, 0, 'drain empties it')
})

t.test('different devices or classes stay apart, in order of first seq', async (t) => {
  const c = new Coalescer()
  c.add(input(1, 'loop1'))
  c.add(input(2, 'loop0'))
  c.add(input(3, 'loop1', 'read-block-failed'))
  c.add(input(4, 'loop1'))
  const evs = c.drain('n1', 'b')
  t.same(evs.map((e) => [e.data.device, e.data.class, e.data.count]), [['loop1', 'decompression-failed', 2], ['loop0', 'decompression-failed', 1], ['loop1', 'read-block-failed', 1]])
})

t.test('the same records make the same event ids (a replay is a duplicate, not a new report)', async (t) => {
  const a = new Coalescer()
  const b = new Coalescer()
  for (const s of [5, 6]) {
    a.add(input(s, 'loop0'))
    b.add(input(s, 'loop0'))
  }
  t.equal(a.drain('n1', 'boot')[0]!.id, b.drain('n1', 'boot')[0]!.id)
  t.not(stableId('kmsg', 'boot-a', 1), stableId('kmsg', 'boot-b', 1), 'another boot, another id')
  t.match(stableId('x'), /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
})
