import t, { type Test } from 'tap'
import { PassThrough } from 'node:stream'
import type { IncomingMessage } from 'node:http'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeEvent } from '../../agent/protocol/event.js'
import { EventLog } from '../../agent/head/event-log.js'
import { HttpProblem } from '../../agent/head/http-util.js'
import { type IngestDeps, ingestEvents, type StoredEvent } from '../../agent/head/ingest.js'
import { parseNodesConfig } from '../../agent/head/nodes-config.js'
import { RateLimiter } from '../../agent/head/rate-limit.js'
import { DEFAULT_EVENT_LIMITS } from '../../agent/head/validate-events.js'
import { silentLogger } from '../../agent/core/log.js'

const CONFIG = parseNodesConfig({ schema: 1, defaults: { image: 'CPE-base' }, nodes: { n1: {} } })

/** A request body as the server sees it: a stream with headers. */
const request = (body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }): IncomingMessage => {
  const s = new PassThrough() as unknown as IncomingMessage & PassThrough
  Object.assign(s, { headers, complete: true })
  s.end(typeof body === 'string' ? body : JSON.stringify(body))
  return s
}

const deps = (t: Test, over: Partial<IngestDeps> = {}): IngestDeps & { applied: StoredEvent[] } => {
  const applied: StoredEvent[] = []
  const events = new EventLog(join(t.testdir(), 'events'))
  t.teardown(() => events.close())
  return { events, limiter: new RateLimiter({ burstEvents: 10, eventsPerSecond: 1, now: () => 0 }), maxBodyBytes: 64 * 1024, eventLimits: DEFAULT_EVENT_LIMITS, log: silentLogger(), apply: (e) => applied.push(e), applied, ...over }
}

const problem = async (p: Promise<unknown>): Promise<HttpProblem> => {
  const e: unknown = await p.then(() => undefined, (err: unknown) => err)
  if (e instanceof HttpProblem) return e
  throw new Error(`expected an HttpProblem, got ${String(e)}`)
}

t.test('a batch is stored, folded into the node view and acknowledged; a repeat counts as duplicates', async (t) => {
  const d = deps(t)
  await (d.events as EventLog).open()
  const batch = [makeEvent('status', 'n1', {}), makeEvent('status', 'n1', {})]
  t.same(await ingestEvents(request({ events: batch }), CONFIG, 'n1', d), { accepted: 2, duplicates: 0 })
  t.same(d.applied.map((e) => e.id), batch.map((e) => e.id))
  t.same(await ingestEvents(request({ events: batch }), CONFIG, 'n1', d), { accepted: 0, duplicates: 2 })
  t.equal((await readFile(join((d.events as EventLog).dir, 'n1.jsonl'), 'utf8')).trim().split('\n').length, 2)
  t.equal(d.limiter.take('n1', 8), 0, 'duplicates were refunded: 8 of 10 tokens left')
})

t.test('refusals come before anything is stored', async (t) => {
  const d = deps(t)
  const unknown = await problem(ingestEvents(request({ events: [] }), CONFIG, 'ghost', d))
  t.same([unknown.status, unknown.code, unknown.message], [404, 'ENONODE', 'node "ghost" is not in the nodes file'])
  const media = await problem(ingestEvents(request('{}', { 'content-type': 'text/plain' }), CONFIG, 'n1', d))
  t.same([media.status, media.code], [415, 'EMEDIATYPE'])
  const json = await problem(ingestEvents(request('{"events": ['), CONFIG, 'n1', d))
  t.same([json.status, json.code], [400, 'EBADJSON'])
  const big = await problem(ingestEvents(request({ events: [] }, { 'content-length': '100000' }), CONFIG, 'n1', d))
  t.same([big.status, big.code, big.details], [413, 'ETOOLARGE', { limit: 64 * 1024 }])
  t.same(d.applied, [])
})

t.test('a node over its rate gets 429 with Retry-After in whole seconds, and nothing is stored', async (t) => {
  let appended = 0
  const d = deps(t, { events: { append: async () => ((appended++, { accepted: [], duplicates: 0 })) } })
  const batch = Array.from({ length: 10 }, () => makeEvent('status', 'n1', {}))
  await ingestEvents(request({ events: batch }), CONFIG, 'n1', d)
  const p = await problem(ingestEvents(request({ events: batch.slice(0, 3) }), CONFIG, 'n1', d))
  t.same([p.status, p.code, p.headers, p.details], [429, 'ERATE', { 'retry-after': '3' }, { retryAfterSeconds: 3 }])
  t.equal(p.message, 'node n1 is sending events faster than the limit; retry after 3 s')
  t.equal(appended, 1)
})

t.test('a store that fails is 503 ESTORE with Retry-After, and the batch costs the node nothing', async (t) => {
  const d = deps(t, { events: { append: async () => Promise.reject(new Error('disk on fire')) } })
  const batch = Array.from({ length: 10 }, () => makeEvent('status', 'n1', {}))
  const p = await problem(ingestEvents(request({ events: batch }), CONFIG, 'n1', d))
  t.same([p.status, p.code, p.headers, p.message], [503, 'ESTORE', { 'retry-after': '5' }, 'events were not stored: disk on fire; retry later'])
  t.equal(d.limiter.take('n1', 10), 0, 'the tokens were refunded')
})
