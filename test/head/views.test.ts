import t from 'tap'
import { chmod, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeEvent } from '../../agent/protocol/event.js'
import { NodeStates } from '../../agent/head/node-state.js'
import { parseNodesConfig } from '../../agent/head/nodes-config.js'
import { ImageStore } from '../../agent/head/store.js'
import { consistencyView, imageHistory, imageList, nodeView, publishedNames } from '../../agent/head/views.js'
import { imageBytes, publishBytes, sha256 } from '../helpers/head-fixtures.js'

const config = parseNodesConfig({
  schema: 1,
  defaults: { image: 'CPE-base', style: 'disked', partitions: { cache: 'LABEL=c', root: 'LABEL=r' } },
  nodes: { n1: {}, quiet: {} },
})
const A = 'a'.repeat(64)

t.test('nodeView: a configured node has its plan; one known only from events has none; a node in neither is 404 ENONODE', async (t) => {
  const states = new NodeStates()
  states.apply(makeEvent('boot', 'n1', { record: { result: 'ok' } }, { image: { name: 'CPE-base', sha256: A }, now: new Date('2026-01-01T00:00:00Z') }))
  states.apply(makeEvent('lost', 'stray', { count: 2 }))
  t.match(nodeView(config, states, 'n1', 1), {
    schema: 1, node: 'n1', configured: true, plan: { style: 'disked', image: { name: 'CPE-base' }, arch: null },
    running: { sha256: A, source: 'boot' }, lastBoot: { result: 'ok' }, events: 1, lost: 0, integrity: { count: 0, recent: [] },
  })
  t.match(nodeView(config, states, 'quiet', 0), { configured: true, running: null, lastBoot: null, lastStatus: null, lastEventAt: null, squashfsErrors: { count: 0 }, ioErrors: { count: 0 } })
  const stray = nodeView(config, states, 'stray', 1)
  t.match(stray, { configured: false, lost: 2 })
  t.notOk('plan' in stray, 'no plan for a node the nodes file does not name')
  t.throws(() => nodeView(config, states, 'nobody', 0), { status: 404, code: 'ENONODE' })
})

t.test('imageList and imageHistory answer from the store; a name never published is 404 ENOIMAGE', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  t.same(await imageList(store), { images: [] })
  const v1 = await publishBytes(store.dir, 'CPE-base', imageBytes(50_000, 1), { dir })
  const v2 = await publishBytes(store.dir, 'CPE-base', imageBytes(50_000, 2), { dir })
  t.match(await imageList(store), { images: [{ name: 'CPE-base', current: { sha256: v2.sha256 } }] })
  t.match(await imageHistory(store, 'CPE-base'), { name: 'CPE-base', current: { sha256: v2.sha256 }, history: [{ sha256: v1.sha256 }, { sha256: v2.sha256, previous: v1.sha256 }] })
  await t.rejects(imageHistory(store, 'never'), { status: 404, code: 'ENOIMAGE' })
})

t.test('publishedNames: a changed object is hashed once per file identity and named by what it holds now; a lost one is missing', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = imageBytes(80_000, 3)
  const other = imageBytes(80_000, 4)
  await publishBytes(store.dir, 'a', bytes, { dir })
  const b = await publishBytes(store.dir, 'b', imageBytes(80_000, 5), { dir })
  const hashed = new Map<string, string>()
  t.match(await publishedNames(store, hashed), [{ name: 'a', drift: [] }, { name: 'b', drift: [] }])
  t.equal(hashed.size, 0, 'nothing hashed while nothing changed')
  const obj = store.objectPath(sha256(bytes))
  await chmod(obj, 0o644)
  await writeFile(obj, other)
  await rm(store.objectPath(b.sha256))
  const first = await publishedNames(store, hashed)
  t.match(first[0]?.drift, [{ sha256: sha256(bytes), nowSha256: sha256(other) }])
  t.match(first[1]?.drift, [{ sha256: b.sha256, found: 'missing' }])
  t.equal(first[1]?.drift[0]?.nowSha256, undefined)
  t.same([...hashed.values()], [sha256(other)], 'one hash, kept by file identity')
  // A stale entry for the same identity proves the second call reads the map, not the file.
  const [key] = [...hashed.keys()]
  hashed.set(key!, 'f'.repeat(64))
  t.equal((await publishedNames(store, hashed))[0]?.drift[0]?.nowSha256, 'f'.repeat(64))
})

t.test('consistencyView is dated by the clock it is given', async (t) => {
  const store = new ImageStore(t.testdir())
  const v = await consistencyView(store, new NodeStates(), new Map(), { now: () => Date.parse('2030-05-06T07:08:09Z') })
  t.match(v, { schema: 1, generatedAt: '2030-05-06T07:08:09.000Z', inconsistent: [], images: [] })
})
