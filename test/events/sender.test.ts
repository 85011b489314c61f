import t from 'tap'
import { Spool } from '../../agent/events/spool.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { Sender, eventsUrl, senderRetryPolicy } from '../../agent/events/sender.js'
import { backoffMs } from '../../agent/core/retry.js'
import { startTestHead } from '../helpers/real-head.js'
import { startFaultProxy } from '../helpers/fault-proxy.js'

/** Events numbered by the kernel log seq they cover (seq i for the i-th). */
const evs = (n: number, tag: string) => Array.from({ length: n }, (_, i) => makeEvent('io-error', 'n1', { class: tag, count: 1, kmsg: { bootId: tag, firstSeq: i, lastSeq: i, seqs: [[i, i]] } }))
const seqOf = (e: { data: Record<string, unknown> }): unknown => (e.data.kmsg as { firstSeq?: number } | undefined)?.firstSeq

// Every test talks to the real head node (agent/head/server.ts) started here; "down" is that head really stopped.

t.test('head down for the whole run: events stay spooled; head back: all delivered exactly once', async (t) => {
  const head = await startTestHead(['n1'])
  t.teardown(() => head.stop())
  await head.down()
  const spool = new Spool(t.testdir())
  const sent = evs(25, 'down')
  await spool.append(...sent)
  const sender = new Sender({ server: head.url, node: 'n1', spools: [spool], batchSize: 10, requestTimeoutMs: 2_000 })
  await t.rejects(sender.flushOnce(), 'delivery fails while the head is down')
  t.equal((await spool.files()).length, 25, 'nothing left the spool')
  await head.up()
  const r = await sender.flushOnce()
  t.equal(r.sent, 25)
  t.equal((await spool.files()).length, 0, 'spool empty after delivery')
  t.same(head.events().map((e) => e.id).sort(), sent.map((e) => e.id).sort(), 'every event arrived')
  t.equal(head.received().length, 25, 'and none twice')
})

t.test('a batch resent after a lost answer is stored once (ids make it exactly-once)', async (t) => {
  const head = await startTestHead(['n1'])
  t.teardown(() => head.stop())
  const spool = new Spool(t.testdir())
  const sent = evs(3, 'resend')
  await spool.append(...sent)
  // Simulate "stored, but the answer never came": deliver, then put the same events back.
  const sender = new Sender({ server: head.url, node: 'n1', spools: [spool] })
  await sender.flushOnce()
  await spool.append(...sent)
  const r = await sender.flushOnce()
  t.equal(r.duplicates, 3, 'the server saw them as duplicates')
  t.equal(head.events().length, 3)
})

t.test('spool bound exceeded while the head is down: a lost event with the right count', async (t) => {
  const head = await startTestHead(['n1'])
  t.teardown(() => head.stop())
  await head.down()
  const spool = new Spool(t.testdir(), { maxEvents: 5 })
  const all = evs(12, 'bound')
  for (const e of all) await spool.append(e)
  const sender = new Sender({ server: head.url, node: 'n1', spools: [spool] })
  await t.rejects(sender.flushOnce())
  await head.up()
  await sender.flushOnce()
  const got = head.events()
  const lost = got.filter((e) => e.kind === 'lost')
  t.equal(lost.length, 1, 'one lost event')
  t.equal(lost[0]?.data.count, 7, '12 spooled − 5 kept = 7 lost')
  t.same(got.filter((e) => e.kind !== 'lost').map(seqOf), [7, 8, 9, 10, 11], 'the newest five kept, in order')
  t.equal(await spool.lostCount(), 0, 'the count was reset once reported')
  // A resend of the same lost report (crash before the reset) keeps its id.
  t.equal(head.received().filter((e) => e.kind === 'lost').length, 1)
})

t.test('a refused event is isolated by splitting the batch, dropped, and counted as lost', async (t) => {
  const head = await startTestHead(['n1'])
  t.teardown(() => head.stop())
  const spool = new Spool(t.testdir())
  await spool.append(...evs(2, 'poison'))
  // The refusals are injected by a fault proxy in front of the real head (which would accept these
  // events): the batch of 2, then the first half, then… each single event once; after that it passes through.
  const proxy = await startFaultProxy(head.url, Array.from({ length: 3 }, () => ({ kind: 'status' as const, status: 400 })))
  t.teardown(() => proxy.stop())
  const sender = new Sender({ server: proxy.url, node: 'n1', spools: [spool] })
  const r = await sender.flushOnce()
  t.ok(r.rejected >= 1, `rejected ${r.rejected}`)
  t.equal((await spool.files()).length, 0, 'the spool is not blocked')
  await sender.flushOnce()
  t.equal(head.events().filter((e) => e.kind === 'lost').reduce((n, e) => n + Number(e.data.count), 0), r.rejected, 'each refused event is counted')
})

t.test('the run loop retries with backoff until the head comes back', async (t) => {
  const head = await startTestHead(['n1'])
  t.teardown(() => head.stop())
  await head.down()
  const spool = new Spool(t.testdir())
  await spool.append(...evs(4, 'loop'))
  const ac = new AbortController()
  const sender = new Sender({ server: head.url, node: 'n1', spools: [spool], minBackoffMs: 20, maxBackoffMs: 100, random: () => 0.5 })
  const loop = sender.run({ signal: ac.signal, intervalMs: 50 })
  // Bounded wait for the first failures.
  for (let i = 0; i < 100 && sender.failures < 2; i++) await new Promise((r) => setTimeout(r, 20))
  t.ok(sender.failures >= 2, 'it kept failing while down')
  await head.up()
  // Until the answer was processed too (the head stores before it answers).
  for (let i = 0; i < 200 && (head.events().length < 4 || sender.failures > 0); i++) await new Promise((r) => setTimeout(r, 20))
  ac.abort()
  await loop
  t.equal(head.events().length, 4)
  t.equal(sender.failures, 0)
  t.equal((await spool.files()).length, 0, 'and the spool is empty')
})

t.test('backoff grows, is capped, and the URL escapes the node id', async (t) => {
  // The sender's numbers for the one policy (core/retry.ts backoffMs): the Nth failure waits between min and min·2^N, capped.
  const p = senderRetryPolicy(100, 1000)
  t.equal(backoffMs(1, p, () => 0), 100, 'never shorter than the minimum')
  t.equal(backoffMs(1, p, () => 1), 200)
  t.equal(backoffMs(3, p, () => 1), 800)
  t.equal(backoffMs(30, p, () => 1), 1000)
  t.equal(backoffMs(30, p, () => 0), 100)
  t.equal(eventsUrl('http://h:1/', 'a b'), 'http://h:1/v1/nodes/a%20b/events')
})
