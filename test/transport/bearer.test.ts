/**
 * The node's token goes to the head's own origin only (docs/security.md):
 * the real transport fetches a manifest from the real head, which requires
 * a token, then the image from the mirror the manifest names — a plain HTTP
 * server that records what it is sent. The mirror never sees the token.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { headBearer } from '../../agent/core/head-token.js'
import { startHead } from '../../agent/head/server.js'
import { fetchImage, fetchManifest } from '../../agent/transport/fetch-image.js'
import { imageBytes, publishBytes, writeNodes } from '../helpers/head-fixtures.js'

const TOKEN = 'site-1a2b3c4d5e6f708192a3b4c5d6e7f8091'

t.test('the manifest request carries the token to the head; the image request to a mirror does not', async (t) => {
  const dir = t.testdir()
  const bytes = imageBytes(256 * 1024, 7)
  // The mirror: answers every GET with the whole image (a server that ignores Range), noting the Authorization it got.
  const seen: Array<string | undefined> = []
  const mirror = createServer((req, res) => {
    seen.push(req.headers.authorization)
    res.writeHead(200, { 'content-length': String(bytes.length) }).end(bytes)
  })
  await new Promise<void>((resolve) => mirror.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => mirror.close(() => resolve())))
  const mirrorUrl = `http://127.0.0.1:${(mirror.address() as AddressInfo).port}/os.img`

  const store = join(dir, 'store')
  const head = await startHead({ store, nodes: await writeNodes(join(dir, 'nodes.json'), { schema: 1, nodes: {} }), token: TOKEN })
  t.teardown(() => head.close({ abort: true }))
  const pub = await publishBytes(store, 'os', bytes, { mirrors: [mirrorUrl], dir })
  const manifestUrl = `${head.url}/v1/images/by-digest/${pub.sha256}/manifest`
  const bearer = headBearer(head.url, TOKEN)

  await t.rejects(fetchManifest(manifestUrl), { code: 'EHTTP' }, 'without the token the head refuses the manifest')
  const manifest = await fetchManifest(manifestUrl, { ...(bearer ? { bearer } : {}) })
  t.same(manifest.urls, [mirrorUrl])
  const cache = await Cache.open(join(dir, 'cache'))
  const r = await fetchImage({ manifest, cache, ...(bearer ? { bearer } : {}) })
  t.equal(r.sha256, pub.sha256)
  t.same(await readFile(r.path), bytes, 'the image came from the mirror, verified')
  t.ok(seen.length > 0, 'the mirror was asked')
  t.same(seen.filter((a) => a !== undefined), [], 'no Authorization header reached the mirror')
})
