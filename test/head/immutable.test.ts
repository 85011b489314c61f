/**
 * By-digest answers any cache may keep (issue 20), from the real head on
 * loopback: `Cache-Control: immutable`, the digest as strong ETag, 304 for a
 * matching `If-None-Match`, `If-Range` honoured; manifests gzip-compressed for
 * a client that accepts it (and inflated by the node's own manifest fetch);
 * the name-based URLs keep working, uncached and uncompressed unless asked.
 */
import t, { type Test } from 'tap'
import { request } from 'node:http'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { startHead } from '../../agent/head/server.js'
import { fetchManifest } from '../../agent/transport/fetch-image.js'
import { imageBytes, publishBytes, writeNodes } from '../helpers/head-fixtures.js'

const IMG = imageBytes(600_000, 4)

const setup = async (t: Test) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const pub = await publishBytes(store, 'os', IMG, { dir })
  const head = await startHead({ store, nodes: await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'os' }, nodes: { n1: {} } }) })
  t.teardown(() => head.close())
  return { head, sha: pub.sha256 }
}

/** A raw GET (node:http: no automatic decompression) with the given headers: status, headers, body bytes. */
const get = (url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> =>
  new Promise((resolve, reject) => {
    request(url, { headers }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }))
      res.on('error', reject)
    })
      .on('error', reject)
      .end()
  })

t.test('image bytes by digest: immutable, strong ETag = digest, 304 on If-None-Match, If-Range kept or refused', async (t) => {
  const { head, sha } = await setup(t)
  const url = `${head.url}/v1/images/by-digest/${sha}/image`
  const whole = await get(url)
  t.equal(whole.status, 200)
  t.equal(whole.headers['cache-control'], 'public, max-age=31536000, immutable')
  t.equal(whole.headers.etag, `"${sha}"`)
  t.same(whole.body, IMG)
  t.equal((await get(url, { 'if-none-match': `"${sha}"` })).status, 304, 'a cache revalidating gets 304')
  t.equal((await get(url, { 'if-none-match': `"${'0'.repeat(64)}"` })).status, 200)
  const resumed = await get(url, { range: 'bytes=100-199', 'if-range': `"${sha}"` })
  t.equal(resumed.status, 206, 'If-Range with our tag: the range')
  t.same(resumed.body, IMG.subarray(100, 200))
  const stale = await get(url, { range: 'bytes=100-199', 'if-range': '"something-else"' })
  t.equal(stale.status, 200, 'If-Range with another tag: the whole file')
  t.equal(stale.body.length, IMG.length)
})

t.test('manifests: gzip on the wire when accepted, immutable by digest, no-cache by name; the node inflates it', async (t) => {
  const { head, sha } = await setup(t)
  const byDigest = `${head.url}/v1/images/by-digest/${sha}/manifest`
  const plain = await get(byDigest)
  t.equal(plain.status, 200)
  t.notOk(plain.headers['content-encoding'], 'not compressed unless asked')
  t.equal(plain.headers.etag, `"${sha}"`)
  t.equal(plain.headers['cache-control'], 'public, max-age=31536000, immutable')
  const gz = await get(byDigest, { 'accept-encoding': 'gzip, deflate' })
  t.equal(gz.headers['content-encoding'], 'gzip')
  t.equal(gz.headers.vary, 'accept-encoding')
  t.same(gunzipSync(gz.body), plain.body, 'the same manifest')
  t.ok(gz.body.length < plain.body.length * 0.8, `smaller on the wire (${gz.body.length} vs ${plain.body.length} bytes)`)
  t.equal((await get(byDigest, { 'accept-encoding': 'gzip;q=0' })).headers['content-encoding'], undefined, 'q=0 refuses gzip')
  t.equal((await get(byDigest, { 'if-none-match': `"${sha}"` })).status, 304)
  const byName = await get(`${head.url}/v1/images/os/manifest`, { 'accept-encoding': 'gzip' })
  t.equal(byName.status, 200, 'the name-based URL still works')
  t.equal(byName.headers['cache-control'], 'no-cache', 'and is not cached (a name moves)')
  t.notOk(byName.headers.etag)
  t.same(gunzipSync(byName.body), plain.body)
  const before = head.stats().metadataBytes
  const m = await fetchManifest(byDigest)
  t.equal(m.sha256, sha, 'the node fetches and parses the compressed manifest')
  t.equal(head.stats().metadataBytes - before, gz.body.length, 'and the head sent the compressed bytes')
})
