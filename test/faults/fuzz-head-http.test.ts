/**
 * The HTTP-facing parsers through the real head node (agent/head/server.ts,
 * in this process, on loopback): generated boot-descriptor requests (node id
 * and ?arch=), event batches (mutated valid batches, raw bodies, odd
 * content types), Range headers on the image, and arbitrary paths and
 * methods, from a fixed seed. Every answer must be a deliberate one: never a
 * 500, an error answer always the JSON problem body with a code, a refused
 * event batch naming its field; and the head still serves after all of it.
 */
import t from 'tap'
import fc from 'fast-check'
import { request } from 'node:http'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { imageBytes, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'
import { anyValue, mutatedDoc } from './fuzz-lib.js'

const SEED = Number(process.env.FUZZ_SEED ?? 0x22_0100)
/** Requests per kind (four kinds). */
const PER_KIND = Number(process.env.FUZZ_HTTP_PER_KIND ?? 400)
const IN_FLIGHT = 8

interface Req { kind: string; method: string; path: string; headers: Record<string, string>; body?: string }
interface Res { status: number; body: string }

const send = (port: number, r: Req): Promise<Res> =>
  new Promise((resolve, reject) => {
    const q = request({ host: '127.0.0.1', port, method: r.method, path: r.path, headers: r.headers }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    q.on('error', reject)
    q.end(r.body)
  })

t.test(`the real head answers ${4 * PER_KIND} generated requests without a 500`, async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const img = imageBytes(300_000, 3)
  await publishBytes(store, 'base', img, { dir })
  const nodes = await writeNodes(join(dir, 'nodes.json'), {
    schema: 1, defaults: { image: 'base' }, groups: { g: { style: 'rwram' } },
    nodes: { n1: {}, n2: { group: 'g' }, n3: { arch: 'aarch64' }, 'constructor-x': {} },
  })
  const head = await startHead({ store, nodes, rateLimit: { burstEvents: 1e9, eventsPerSecond: 1e9 } })
  t.teardown(() => head.close())
  const port = head.port
  const digest = sha256(img)

  const text = fc.string({ maxLength: 24 })
  const nodeId = fc.oneof(fc.constantFrom('n1', 'n2', 'n3', 'ghost', 'toString', 'constructor', '__proto__', '..', '.', '%2e%2e', 'a'.repeat(300)), text)
  const descriptor = fc.tuple(nodeId, fc.option(fc.oneof(fc.constantFrom('x86_64', 'aarch64', 'arm64', 'toString', ''), text))).map(([n, a]): Req => ({
    kind: 'descriptor', method: 'GET', headers: {},
    path: `/v1/nodes/${encodeURIComponent(n)}/boot${a === null ? '' : `?arch=${encodeURIComponent(a)}`}`,
  }))
  const valid = { events: [makeEvent('fallback', 'n1', { kind: 'root-missing', reason: 'r', requestedStyle: 'disked', style: null }), makeEvent('lost', 'n1', { source: 'kmsg', count: 2 })] }
  const batchDoc = JSON.parse(JSON.stringify(valid)) as unknown
  const events = fc.tuple(
    fc.oneof({ weight: 6, arbitrary: mutatedDoc([batchDoc]).map((d) => JSON.stringify(d) ?? '') }, { weight: 2, arbitrary: anyValue.map((v) => JSON.stringify(v) ?? '') }, { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 300 }) }),
    fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', ''),
    fc.constantFrom('n1', 'n2', 'ghost'),
  ).map(([body, ctype, node]): Req => ({ kind: 'events', method: 'POST', path: `/v1/nodes/${node}/events`, headers: ctype ? { 'content-type': ctype } : {}, body }))
  const num = fc.oneof(fc.constant(''), fc.nat({ max: 400_000 }).map(String), fc.constantFrom('-1', '1e3', '99999999999999999999', '0'))
  const range = fc.tuple(fc.constantFrom('GET', 'HEAD'), fc.oneof(
    fc.tuple(fc.constantFrom('bytes=', 'bytes =', 'items='), num, fc.constantFrom('-', '--', ''), num, fc.constantFrom('', ',0-1')).map((p) => p.join('')),
    fc.string({ maxLength: 30 }),
  )).map(([method, r]): Req => ({ kind: 'range', method, path: `/v1/images/by-digest/${digest}/image`, headers: r.trim() ? { range: r } : {} }))
  const anyPath = fc.tuple(
    fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'),
    fc.array(fc.oneof(fc.constantFrom('v1', 'nodes', 'images', 'by-digest', digest, 'boot', 'events', 'manifest', 'image', 'consistency', '..', '%00', '%2F', ''), text.map(encodeURIComponent)), { maxLength: 6 }),
    fc.option(text.map(encodeURIComponent)),
  ).map(([method, parts, query]): Req => ({ kind: 'path', method, path: `/${parts.join('/')}${query === null ? '' : `?${query}`}`, headers: {}, ...(method === 'POST' ? { body: '{}' } : {}) }))

  const reqs = [descriptor, events, range, anyPath].flatMap((arb, i) => fc.sample(arb, { seed: SEED + i, numRuns: PER_KIND }))
  const statuses = new Map<number, number>()
  const problems: string[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    for (let i = next++; i < reqs.length; i = next++) {
      const r = reqs[i]!
      let res: Res
      try {
        res = await send(port, r)
      } catch (e) {
        problems.push(`${r.kind} ${r.method} ${r.path}: no answer (${(e as Error).message})`)
        continue
      }
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      if (res.status >= 500) problems.push(`${r.kind} ${r.method} ${r.path} ${JSON.stringify(r.headers)} ${r.body?.slice(0, 200) ?? ''} → ${res.status} ${res.body.slice(0, 200)}`)
      else if (res.status >= 400 && r.method !== 'HEAD') {
        let code: unknown
        let field: unknown
        try {
          const err = (JSON.parse(res.body) as { error?: { code?: unknown; field?: unknown } }).error
          code = err?.code
          field = err?.field
        } catch {
          code = undefined
        }
        if (typeof code !== 'string') problems.push(`${r.kind} ${r.path} → ${res.status} without a JSON problem code: ${res.body.slice(0, 200)}`)
        if (code === 'EBADEVENT' && typeof field !== 'string') problems.push(`${r.kind} → 400 EBADEVENT without the field: ${res.body.slice(0, 200)}`)
      }
    }
  }
  const t0 = Date.now()
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
  t.comment(`seed ${SEED}: ${reqs.length} requests in ${Date.now() - t0} ms; statuses ${[...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(', ')}`)
  t.same(problems.slice(0, 20), [], `no 5xx, no answer without a problem code (${problems.length} problems)`)
  t.ok((statuses.get(200) ?? 0) > 0 && [...statuses.keys()].some((s) => s >= 400), 'the requests reached both accepted and refused answers')
  const still = await send(port, { kind: 'check', method: 'GET', path: '/v1/nodes/n1/boot', headers: {} })
  t.equal(still.status, 200, 'the head still serves a descriptor afterwards')
})
