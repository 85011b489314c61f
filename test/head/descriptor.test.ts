import t from 'tap'
import { describeNode, descriptorFor, entryFor, planFor } from '../../agent/head/descriptor.js'
import { HttpProblem } from '../../agent/head/http-util.js'
import { parseNodesConfig } from '../../agent/head/nodes-config.js'
import type { NameEntry } from '../../agent/head/store.js'

const X = 'a'.repeat(64)
const X_OLD = 'b'.repeat(64)
const ARM = 'c'.repeat(64)

const CONFIG = parseNodesConfig({
  schema: 1,
  defaults: { image: 'CPE-base', style: 'disked', partitions: { cache: 'LABEL=cwcache' }, policies: { verify: 'fast' } },
  architectures: { aarch64: { image: 'CPE-base-arm' } },
  nodes: { n1: {}, n3: { arch: 'aarch64' }, n4: { image: 'CPE-base-arm' }, pinned: { image: `CPE-base@sha256:${X_OLD}` }, ghost: { image: 'Nope' } },
})

const entry = (name: string, sha256: string, arch: NameEntry['arch'] = 'x86_64'): NameEntry => ({ name, sha256, size: 1000, arch, time: '2026-01-01T00:00:00.000Z' })

const STORE: Record<string, NameEntry[]> = {
  'CPE-base': [entry('CPE-base', X_OLD), entry('CPE-base', X)],
  'CPE-base-arm': [entry('CPE-base-arm', ARM, 'aarch64')],
}
const store = {
  history: async (name: string): Promise<NameEntry[]> => STORE[name] ?? [],
  current: async (name: string): Promise<NameEntry | undefined> => STORE[name]?.at(-1),
}

const problem = async (fn: () => unknown): Promise<HttpProblem> => {
  try {
    await fn()
  } catch (e) {
    if (e instanceof HttpProblem) return e
    throw e
  }
  throw new Error('no problem thrown')
}

t.test('a node without a pin gets the name\'s current digest, shaped as the protocol says', async (t) => {
  t.same(await describeNode(CONFIG, store, 'n1', 'x86_64'), {
    schema: 1,
    node: 'n1',
    style: 'disked',
    image: { name: 'CPE-base', sha256: X, size: 1000, arch: 'x86_64', manifest: `/v1/images/by-digest/${X}/manifest` },
    partitions: { cache: 'LABEL=cwcache' },
    policies: { verify: 'fast' },
  })
})

t.test('a pinned digest is looked up in the name\'s history, not its current entry', async (t) => {
  const plan = planFor(CONFIG, 'pinned', null)
  t.equal((await entryFor(store, plan))?.sha256, X_OLD)
  t.match(await describeNode(CONFIG, store, 'pinned', null), { image: { sha256: X_OLD } })
})

t.test('the architecture the node reports picks the image; an unknown one is 400', async (t) => {
  t.match(await describeNode(CONFIG, store, 'n1', 'arm64'), { image: { name: 'CPE-base-arm', arch: 'aarch64' } })
  const p = await problem(() => planFor(CONFIG, 'n1', 'sparc'))
  t.same([p.status, p.code, p.message], [400, 'EBADARCH', 'arch "sparc" is not an architecture the head node knows'])
})

t.test('an image of another architecture is refused with 409, never handed out', async (t) => {
  const p = await problem(() => describeNode(CONFIG, store, 'n4', 'x86_64'))
  t.same([p.status, p.code, p.details], [409, 'EARCH', { imageArch: 'aarch64', nodeArch: 'x86_64' }])
  t.equal(p.message, 'image CPE-base-arm is aarch64 but node n4 is x86_64; refusing to hand it out')
  const says = await problem(() => planFor(CONFIG, 'n3', 'x86_64'))
  t.same([says.status, says.code], [409, 'EARCH'], 'node and nodes file disagree')
})

t.test("the nodes file's image architecture wins over the store's", async (t) => {
  const config = { ...CONFIG, images: { 'CPE-base': { arch: 'aarch64' as const } } }
  const p = await problem(() => descriptorFor(config, planFor(config, 'n1', 'x86_64'), entry('CPE-base', X)))
  t.same([p.status, p.details], [409, { imageArch: 'aarch64', nodeArch: 'x86_64' }])
})

t.test('no entry is 404 ENOIMAGE saying whether the digest was pinned', async (t) => {
  const current = await problem(() => describeNode(CONFIG, store, 'ghost', null))
  t.same([current.status, current.code, current.message], [404, 'ENOIMAGE', 'image Nope (for node ghost, from node) is not published in the store'])
  const config = parseNodesConfig({ schema: 1, nodes: { p: { image: `CPE-base@sha256:${ARM}` } } })
  const pinned = await problem(() => describeNode(config, store, 'p', null))
  t.same([pinned.status, pinned.message], [404, `image CPE-base@sha256:${ARM} (pinned for p) was never published under that name`])
  const unknown = await problem(() => planFor(CONFIG, 'nobody', null))
  t.same([unknown.status, unknown.code], [404, 'ENONODE'])
})
