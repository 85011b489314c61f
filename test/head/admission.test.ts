/**
 * The head under a storm (issue 20): over its cap of image streams it answers
 * 503 EBUSY with a Retry-After spread per node, at once, instead of letting
 * requests queue into timeouts; the node's downloader waits at least that
 * long and then gets its image. Real head, real sockets on loopback.
 */
import t, { type Test } from 'tap'
import { request, type ClientRequest, type IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { retryAfterFor, DEFAULT_ADMISSION } from '../../agent/head/admission.js'
import { startHead } from '../../agent/head/server.js'
import { Cache } from '../../agent/cache/store.js'
import { fetchImage, fetchManifest } from '../../agent/transport/fetch-image.js'
import { imageBytes, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'

const MiB = 1024 * 1024
const IMG = imageBytes(8 * MiB, 31)

const setup = async (t: Test, maxImageStreams: number) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const pub = await publishBytes(store, 'os', IMG, { dir })
  const head = await startHead({ store, nodes: await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'os' }, nodes: { n1: {} } }), admission: { maxImageStreams } })
  t.teardown(() => head.close({ abort: true }))
  return { dir, head, sha: pub.sha256, imageUrl: `${head.url}/v1/images/by-digest/${pub.sha256}/image` }
}

/** A GET whose body is not read: the stream stays open (socket buffers full) until `stop()`. */
const hold = (url: string, headers: Record<string, string> = {}): Promise<{ res: IncomingMessage; stop: () => void }> =>
  new Promise((resolve, reject) => {
    const req: ClientRequest = request(url, { headers }, (res) => {
      res.pause()
      resolve({ res, stop: () => req.destroy() })
    })
    req.on('error', () => undefined)
    req.on('error', reject)
    req.end()
  })

t.test('Retry-After is spread by node id, within the configured seconds', async (t) => {
  const seen = new Set<number>()
  for (let i = 0; i < 200; i++) {
    const s = retryAfterFor(`n${i}`, DEFAULT_ADMISSION)
    t.ok(s >= DEFAULT_ADMISSION.retryAfterMinS && s < DEFAULT_ADMISSION.retryAfterMinS + DEFAULT_ADMISSION.retryAfterSpreadS)
    seen.add(s)
  }
  t.equal(seen.size, DEFAULT_ADMISSION.retryAfterSpreadS, 'every second of the spread is used')
  t.equal(retryAfterFor('n7', DEFAULT_ADMISSION), retryAfterFor('n7', DEFAULT_ADMISSION), 'one node always gets the same')
})

t.test('over the cap of image streams: 503 EBUSY with the node\'s Retry-After, at once; under it again: served', async (t) => {
  const { head, imageUrl } = await setup(t, 2)
  const a = await hold(imageUrl)
  const b = await hold(imageUrl)
  t.equal(a.res.statusCode, 200)
  const started = Date.now()
  const shed = await hold(imageUrl, { 'x-boot-agent-node': 'n0042' })
  t.equal(shed.res.statusCode, 503, 'the third stream is shed')
  t.ok(Date.now() - started < 2000, 'answered at once, not after a timeout')
  t.equal(shed.res.headers['retry-after'], String(retryAfterFor('n0042', DEFAULT_ADMISSION)), 'Retry-After is the node\'s own')
  shed.res.resume()
  const other = await hold(imageUrl, { 'x-boot-agent-node': 'n0043' })
  t.equal(other.res.headers['retry-after'], String(retryAfterFor('n0043', DEFAULT_ADMISSION)))
  other.res.resume()
  const desc = await fetch(`${head.url}/v1/nodes/n1/boot`)
  t.equal(desc.status, 200, 'a descriptor is still answered while image streams are at the cap')
  await desc.arrayBuffer()
  a.stop()
  b.stop()
  t.match(head.stats().admission, { shed: 2, peakImageStreams: 2 })
})

t.test('a node shed by the head waits at least Retry-After, then gets a verified image', async (t) => {
  const { dir, head, imageUrl, sha } = await setup(t, 1)
  const blocker = await hold(imageUrl)
  const waits: number[] = []
  const manifest = await fetchManifest(`${head.url}/v1/images/by-digest/${sha}/manifest`)
  const r = await fetchImage({
    manifest,
    cache: await Cache.open(join(dir, 'cache')),
    nodeId: 'n1',
    sleep: async (ms) => {
      waits.push(ms)
      blocker.stop() // the other stream ends while this node waits
    },
  })
  t.equal(r.sha256, sha256(IMG))
  t.ok(waits.length >= 1, 'the node was shed at least once')
  // The downloader's requests name the node (X-Boot-Agent-Node): the head's Retry-After is n1's own.
  const own = retryAfterFor('n1', DEFAULT_ADMISSION) * 1000
  t.ok(waits[0]! >= own, `and waited ${waits[0]} ms, not less than the head's Retry-After for n1 (${own} ms)`)
  t.ok(head.stats().admission.shed >= 1)
})
