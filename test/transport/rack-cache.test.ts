/**
 * The shipped rack cache (contrib/nginx/rack-cache.conf) for real (issue 20):
 * a real nginx running that file in front of the real head, nodes fetching
 * the manifest and the image through it with the real download code. What
 * crosses the uplink is read from the head's own counters.
 */
import t from 'tap'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { startHead } from '../../agent/head/server.js'
import { fetchImage, fetchManifest } from '../../agent/transport/fetch-image.js'
import { gate } from '../helpers/capability.js'
import { imageBytes, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'
import { startRackCache } from '../helpers/rack-cache.js'

const MiB = 1024 * 1024
const IMG = imageBytes(9 * MiB + 4321, 20)

t.test('nodes fetch through the rack cache: each slice crosses the uplink once, a later node makes no upstream request', gate('nginx'), async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const pub = await publishBytes(store, 'os', IMG, { dir })
  const head = await startHead({ store, nodes: await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'os' }, nodes: { n1: {} } }) })
  t.teardown(() => head.close())
  const rack = await startRackCache(head.url)
  t.teardown(() => rack.stop())
  const imagePath = `/v1/images/by-digest/${pub.sha256}/image`
  const manifestUrl = `${rack.url}/v1/images/by-digest/${pub.sha256}/manifest`

  /** One node: manifest and image through the rack cache, the head's URL only as the manifest's fallback. */
  const boot = async (node: string) => {
    const manifest = await fetchManifest(manifestUrl)
    const cache = await Cache.open(join(dir, `cache-${node}`))
    return fetchImage({ manifest, cache, nodeId: node, mirrors: [`${rack.url}${imagePath}`], streams: 2 })
  }

  // A rack booting at once: three nodes, cold cache, concurrently.
  const first = await Promise.all(['n1', 'n2', 'n3'].map(boot))
  for (const r of first) {
    t.equal(r.sha256, sha256(IMG), 'verified image')
    t.equal(r.verifiedBy, 'download')
  }
  const cold = head.stats()
  t.equal(cold.imageBytes, IMG.length, `the head sent the image once for three nodes (${cold.imageBytes} bytes; proxy_cache_lock + slices)`)
  t.equal(cold.byRoute.image, 3, 'one upstream request per 4 MiB slice (3 slices)')
  t.equal(cold.byRoute.manifest, 1, 'the manifest fetched upstream once')

  const later = await boot('n4')
  t.equal(later.sha256, sha256(IMG))
  const warm = head.stats()
  t.equal(warm.byRoute.image, cold.byRoute.image, 'a later node: no upstream request for cached slices')
  t.equal(warm.imageBytes, cold.imageBytes, 'and no image byte from the head')
  t.equal(warm.byRoute.manifest, cold.byRoute.manifest, 'nor for the manifest')
  const served = (await rack.access()).filter((a) => a.path === imagePath)
  t.equal(served.reduce((n, a) => n + a.bytes, 0), 4 * IMG.length, 'the rack cache served all four nodes their bytes')
})
