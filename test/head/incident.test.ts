/**
 * The CSM incident (reference/image-projection-inconsistent.txt) as a test:
 * an image is overwritten in place under the same name; nodes that fetch it
 * afterwards refuse the bytes and report integrity errors; one request to
 * GET /v1/consistency names the image, the digests and which node has which.
 *
 * Real parts: the head node on loopback, the real publish path and CDC
 * manifests, the real fetchManifest/fetchImage with real cache directories.
 * Not real: the nodes' boot stage (see test/helpers/simulated-node.ts).
 */
import t from 'tap'
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { ImageStore } from '../../agent/head/store.js'
import type { ConsistencyView } from '../../agent/head/consistency.js'
import { imageBytes, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'
import { simulateBoot } from '../helpers/simulated-node.js'

t.test('an image overwritten in place is caught by the next nodes and named by one consistency request', async (t) => {
  const dir = t.testdir()
  const storeDir = join(dir, 'store')
  const v1 = imageBytes(4 * 1024 * 1024, 25)
  await publishBytes(storeDir, 'CPE-base', v1, { dir })
  const nodes = ['ncn-w001', 'ncn-w002', 'ncn-w003', 'nid0004', 'nid0005']
  const nodesFile = await writeNodes(join(dir, 'nodes.json'), {
    schema: 1,
    defaults: { image: 'CPE-base', style: 'disked', partitions: { cache: 'LABEL=cwcache', root: 'LABEL=cwroot' } },
    nodes: Object.fromEntries(nodes.map((n) => [n, {}])),
  })
  const head = await startHead({ store: storeDir, nodes: nodesFile })
  t.teardown(() => head.close())
  const caches = join(dir, 'caches')

  // Three nodes boot v1.
  for (const n of nodes.slice(0, 3)) {
    const r = await simulateBoot(head.url, n, caches)
    t.ok(r.ok, `${n} booted`)
    t.equal(r.sha256, sha256(v1))
  }
  const clean = (await (await fetch(`${head.url}/v1/consistency`)).json()) as ConsistencyView
  t.same(clean.inconsistent, [], 'consistent before the overwrite')

  // The CSM mistake: the same name's file is overwritten in place with a
  // rebuilt image (same size, different bytes in the middle), behind the
  // head node's back: not through publish, same path, same inode.
  const store = new ImageStore(storeDir)
  const obj = store.objectPath(sha256(v1))
  const v2 = Buffer.from(v1)
  imageBytes(300_000, 26).copy(v2, 1_500_000)
  await chmod(obj, 0o644)
  await writeFile(obj, v2)

  // The next two nodes fetch: their fetches fail with integrity errors, reported as events.
  for (const n of nodes.slice(3)) {
    const r = await simulateBoot(head.url, n, caches)
    t.notOk(r.ok, `${n} refused the bytes`)
    t.match(r.error, { code: 'EINTEGRITY' }, `${n}: integrity error`)
    t.ok(r.events.some((e) => e.kind === 'integrity'), `${n} reported an integrity event`)
  }

  const view = (await (await fetch(`${head.url}/v1/consistency`)).json()) as ConsistencyView
  t.same(view.inconsistent, ['CPE-base'], 'the image is named')
  const img = view.images.find((i) => i.name === 'CPE-base')
  if (!img) throw new Error('no CPE-base in the view')
  t.equal(img.consistent, false)
  t.equal(img.current, sha256(v1))
  const digests = new Map(img.digests.map((d) => [d.sha256, d]))
  t.same(
    [...digests.keys()].sort(),
    [sha256(v1), sha256(v2)].sort(),
    'the digests involved: the published one and the one now served under it',
  )
  t.match(digests.get(sha256(v1)), { published: true, current: true, booted: nodes.slice(0, 3), running: nodes.slice(0, 3) })
  t.match(digests.get(sha256(v2)), { published: false, servedTo: ['nid0004', 'nid0005'], inStoreAs: [sha256(v1)] })
  t.same(img.nodes, Object.fromEntries(nodes.slice(0, 3).map((n) => [n, sha256(v1)])), 'which node runs which digest')
  t.same(img.integrityErrors.map((e) => e.node).sort(), ['nid0004', 'nid0005'])
  t.same(img.failedBoots.map((e) => e.node).sort(), ['nid0004', 'nid0005'])
  const codes = img.flags.map((f) => f.code).sort()
  t.same(codes, ['served-bytes-differ', 'store-object-modified'])
  const served = img.flags.find((f) => f.code === 'served-bytes-differ')
  t.match(served, { digests: [sha256(v1), sha256(v2)], nodes: ['nid0004', 'nid0005'] })
  t.comment(served?.message ?? '')
})

t.test('nodes that booted different digests under one name are flagged as mixed', async (t) => {
  const dir = t.testdir()
  const storeDir = join(dir, 'store')
  const v1 = imageBytes(300_000, 1)
  const v2 = imageBytes(300_000, 2)
  await publishBytes(storeDir, 'CPE-base', v1, { dir })
  const nodesFile = await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'CPE-base' }, nodes: { a: {}, b: {} } })
  const head = await startHead({ store: storeDir, nodes: nodesFile })
  t.teardown(() => head.close())
  const caches = join(dir, 'caches')
  t.ok((await simulateBoot(head.url, 'a', caches)).ok)
  await publishBytes(storeDir, 'CPE-base', v2, { dir })
  t.ok((await simulateBoot(head.url, 'b', caches)).ok)
  const view = (await (await fetch(`${head.url}/v1/consistency`)).json()) as ConsistencyView
  const img = view.images[0]
  t.match(img, { name: 'CPE-base', current: sha256(v2), nodes: { a: sha256(v1), b: sha256(v2) } })
  t.same(img?.flags.map((f) => f.code), ['mixed-digests'], 'a published update mid-rollout is mixed, not corrupt')
})
