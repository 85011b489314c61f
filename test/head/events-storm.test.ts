/**
 * At-least-once delivery made exactly-once by the head node (SPEC §8), under
 * trouble: 10,000 events from 50 concurrent clients, 10 % of batches sent
 * twice, connections dropped by clients mid-body and after the body (before
 * the answer), and the head node killed (every connection dropped at once)
 * and restarted mid-way on the same store. Every client retries a batch until
 * it is acknowledged. Afterwards every event is on disk exactly once.
 *
 * Bounded: each batch has a retry cap and the whole run a deadline.
 */
import t from 'tap'
import { request } from 'node:http'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type AgentEvent, makeEvent } from '../../agent/protocol/event.js'
import { startHead, type Head } from '../../agent/head/server.js'
import { seededRandom } from '../../agent/transport/mirrors.js'
import { writeNodes } from '../helpers/head-fixtures.js'

const CLIENTS = 50
const EVENTS = 10_000
const PER_CLIENT = EVENTS / CLIENTS
const MAX_ATTEMPTS_PER_BATCH = 1000
const DEADLINE_MS = 50_000

type Outcome = { status: number; body: string } | { dropped: 'mid-body' | 'before-answer' | 'refused' | 'reset' }

/** POSTs `body`; when `drop` is set, kills the connection at that point instead of waiting. */
const post = (port: number, node: string, body: string, drop: 'mid-body' | 'before-answer' | undefined, rnd: () => number): Promise<Outcome> =>
  new Promise((resolve) => {
    let done = false
    const finish = (o: Outcome): void => {
      if (!done) {
        done = true
        resolve(o)
      }
    }
    const req = request({ host: '127.0.0.1', port, path: `/v1/nodes/${node}/events`, method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (d: string) => (text += d))
      res.on('end', () => finish({ status: res.statusCode ?? 0, body: text }))
      res.on('error', () => finish({ dropped: 'reset' }))
    })
    req.on('error', (e: NodeJS.ErrnoException) => finish({ dropped: e.code === 'ECONNREFUSED' ? 'refused' : 'reset' }))
    if (drop === 'mid-body') {
      req.write(body.slice(0, Math.floor(body.length / 2)))
      setTimeout(() => {
        req.destroy()
        finish({ dropped: 'mid-body' })
      }, Math.floor(rnd() * 3))
      return
    }
    req.end(body)
    if (drop === 'before-answer') {
      setTimeout(() => {
        req.destroy()
        finish({ dropped: 'before-answer' })
      }, Math.floor(rnd() * 4))
    }
  })

t.test('10,000 events, 50 clients, duplicates, dropped connections and a head restart: each acknowledged event stored exactly once', async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const nodeIds = Array.from({ length: CLIENTS }, (_, i) => `c${String(i).padStart(2, '0')}`)
  const nodes = await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: {}, nodes: Object.fromEntries(nodeIds.map((n) => [n, {}])) })
  let head: Head = await startHead({ store, nodes })
  const port = head.port
  const deadline = AbortSignal.timeout(DEADLINE_MS)
  const tally = { acked: 0, batches: 0, resentDuplicates: 0, dropsMidBody: 0, dropsBeforeAnswer: 0, refused: 0, resets: 0, rateLimited: 0, restarts: 0 }
  const acknowledged = new Map<string, Set<string>>(nodeIds.map((n) => [n, new Set()]))
  let restarting: Promise<void> | undefined

  const restartOnce = (): void => {
    if (tally.restarts > 0 || restarting) return
    tally.restarts++
    restarting = (async () => {
      // A crash as clients see it: every connection dropped at once, then a new process on the same store.
      await head.close({ abort: true })
      await new Promise((r) => setTimeout(r, 100))
      head = await startHead({ store, nodes, listen: `127.0.0.1:${port}` })
      restarting = undefined
    })()
  }

  const sendUntilAcked = async (node: string, batch: AgentEvent[], rnd: () => number, expectAllDuplicates: boolean): Promise<void> => {
    const body = JSON.stringify({ events: batch })
    for (let attempt = 1; attempt <= MAX_ATTEMPTS_PER_BATCH; attempt++) {
      if (deadline.aborted) throw new Error(`deadline passed while ${node} was sending`)
      const roll = rnd()
      const drop = roll < 0.05 ? 'mid-body' : roll < 0.1 ? 'before-answer' : undefined
      const o = await post(port, node, body, drop, rnd)
      if ('dropped' in o) {
        if (o.dropped === 'mid-body') tally.dropsMidBody++
        else if (o.dropped === 'before-answer') tally.dropsBeforeAnswer++
        else if (o.dropped === 'refused') tally.refused++
        else tally.resets++
        // The head is down while refused: wait longer than after a drop of our own making.
        const waitMs = o.dropped === 'refused' ? 50 + Math.floor(rnd() * 50) : 5 + Math.floor(rnd() * 30)
        await new Promise((r) => setTimeout(r, waitMs))
        continue
      }
      if (o.status === 429) {
        tally.rateLimited++
        await new Promise((r) => setTimeout(r, 50))
        continue
      }
      if (o.status !== 200) throw new Error(`${node}: unexpected HTTP ${o.status}: ${o.body}`)
      const ans = JSON.parse(o.body) as { accepted: number; duplicates: number }
      if (ans.accepted + ans.duplicates !== batch.length) throw new Error(`${node}: answer ${o.body} does not account for ${batch.length} events`)
      if (expectAllDuplicates && ans.accepted !== 0) throw new Error(`${node}: a batch sent again after its acknowledgement was stored again: ${o.body}`)
      if (expectAllDuplicates) tally.resentDuplicates++
      for (const e of batch) acknowledged.get(node)?.add(e.id)
      return
    }
    throw new Error(`${node}: a batch was not acknowledged after ${MAX_ATTEMPTS_PER_BATCH} attempts`)
  }

  const client = async (node: string, idx: number): Promise<void> => {
    const rnd = seededRandom(`storm-${idx}`)
    let sent = 0
    // Bounded: each turn sends at least one new event.
    while (sent < PER_CLIENT) {
      const n = Math.min(PER_CLIENT - sent, 1 + Math.floor(rnd() * 12))
      const batch = Array.from({ length: n }, (_, i) => (i % 7 === 0 ? makeEvent('io-error', node, { device: 'sda', kmsg: { firstSeq: sent + i } }) : makeEvent('status', node, { uptimeS: sent + i })))
      sent += n
      await sendUntilAcked(node, batch, rnd, false)
      tally.batches++
      tally.acked += n
      if (tally.acked >= EVENTS / 2) restartOnce()
      // 10 % of batches are sent a second time after their acknowledgement (a lost ack retried).
      if (rnd() < 0.1) await sendUntilAcked(node, batch, rnd, true)
    }
  }

  await Promise.all(nodeIds.map((n, i) => client(n, i)))
  if (restarting) await restarting
  t.teardown(() => head.close())

  t.equal(tally.acked, EVENTS, 'every event acknowledged')
  t.equal(tally.restarts, 1, 'the head restarted once mid-way')
  t.ok(tally.resentDuplicates > 0, `${tally.resentDuplicates} batches were sent twice and answered as duplicates`)
  t.ok(tally.dropsMidBody + tally.dropsBeforeAnswer > 0, 'connections were dropped')
  t.comment(JSON.stringify(tally))

  // What is on disk, read directly (not through the server's index).
  let stored = 0
  let twice = 0
  let missing = 0
  for (const node of nodeIds) {
    const lines = (await readFile(join(store, 'events', `${node}.jsonl`), 'utf8')).split('\n').filter(Boolean)
    const ids = lines.map((l) => (JSON.parse(l) as AgentEvent).id)
    const set = new Set(ids)
    twice += ids.length - set.size
    stored += set.size
    for (const id of acknowledged.get(node) ?? []) if (!set.has(id)) missing++
  }
  t.equal(missing, 0, 'no acknowledged event is missing')
  t.equal(twice, 0, 'no event is stored twice')
  t.equal(stored, EVENTS, 'exactly the events sent are stored (none invented)')

  // A restarted head rebuilds its index: everything is a duplicate now.
  await head.close()
  head = await startHead({ store, nodes })
  const again = await fetch(`${head.url}/v1/nodes/c00`)
  t.match(await again.json(), { events: PER_CLIENT })
})
