/**
 * Per-node spreading (issue 20): the node id, not the host name (the same on
 * every node booted from one initramfs), seeds the order a node tries its
 * mirrors in and the jitter of its retries. Real HTTP servers on loopback
 * that answer 503 record which mirror each attempt went to; the retry waits
 * are recorded instead of slept.
 */
import t, { type Test } from 'tap'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { fetchImage } from '../../agent/transport/fetch-image.js'
import { DEFAULT_RETRY_POLICY } from '../../agent/core/retry.js'
import { manifestFor, seededBytes } from '../helpers/image.js'
import { orderMirrors } from '../../agent/transport/mirrors.js'

/** Three mirrors that answer every request 503 (no Retry-After), logging which one was asked. */
const busyMirrors = async (t: Test, hits: string[]): Promise<string[]> => {
  const urls: string[] = []
  for (const name of ['m0', 'm1', 'm2']) {
    const server: Server = createServer((req, res) => {
      hits.push(name)
      req.resume()
      res.writeHead(503, { 'content-length': '0' }).end()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.teardown(() => new Promise<void>((r) => server.close(() => r())))
    const addr = server.address()
    urls.push(`http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/${name}/image`)
  }
  return urls
}

const data = seededBytes(200_000, 'spread')

/** One failed fetch by `nodeId` against `urls`: which mirror each attempt asked, and the waits between them. */
const attempt = async (t: Test, urls: string[], hits: string[], nodeId: string): Promise<{ hits: string[]; waits: number[] }> => {
  hits.length = 0
  const waits: number[] = []
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const err = await fetchImage({
    manifest: manifestFor(data, urls),
    cache,
    nodeId,
    retry: { ...DEFAULT_RETRY_POLICY, maxAttempts: 6, baseDelayMs: 1000, maxDelayMs: 60_000 },
    sleep: async (ms) => void waits.push(ms),
  }).catch((e: unknown) => e)
  t.match(err, { code: 'EHTTP' }, `${nodeId}: every mirror busy, the fetch fails after its attempts`)
  return { hits: [...hits], waits }
}

const nameOf = (url: string): string => url.split('/')[3] ?? url

t.test('two nodes with different ids try the mirrors in different orders and wait different times', async (t) => {
  const hits: string[] = []
  const urls = await busyMirrors(t, hits)
  // The servers' ports change between runs and are part of the rendezvous hash: each node's
  // order is checked against its own id's order, and two nodes that start apart are compared.
  const ids = ['n0001', 'n0002', 'n0003', 'n0004', 'n0005', 'n0006']
  const runs = new Map<string, { hits: string[]; waits: number[] }>()
  for (const id of ids) {
    const r = await attempt(t, urls, hits, id)
    runs.set(id, r)
    t.same(r.hits.slice(0, 3), orderMirrors(urls, id).map(nameOf), `${id} tries the mirrors in its own id's order (${r.hits.join(',')})`)
  }
  const a = runs.get('n0001')!
  const other = ids.find((id) => runs.get(id)!.hits[0] !== a.hits[0])
  t.ok(other, 'nodes do not all start on the same mirror')
  const b = runs.get(other!)!
  t.not(a.hits[0], b.hits[0], `first mirror differs: n0001 ${a.hits[0]} vs ${other} ${b.hits[0]}`)
  t.ok(a.waits.length >= 2 && b.waits.length >= 2, 'retries waited')
  for (const id of ids.slice(1)) t.notSame(runs.get(id)!.waits, a.waits, `retry delays differ: n0001 ${a.waits.join(',')} vs ${id} ${runs.get(id)!.waits.join(',')}`)
  const again = await attempt(t, urls, hits, 'n0001')
  t.same(again.waits, a.waits, 'and one node waits the same way every time (seeded by its id, not the clock)')
})
