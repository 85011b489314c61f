import t from 'tap'
import { configuredNode, imageOverrides, parseNodesConfig, resolvePlan } from '../../agent/head/nodes-config.js'
import { normaliseArch } from '../../agent/head/names.js'

const SHA = 'a'.repeat(64)
const config = parseNodesConfig({
  schema: 1,
  defaults: { image: 'base', style: 'disked', partitions: { cache: 'LABEL=cwcache', root: 'LABEL=cwroot' }, policies: { verify: 'fast' } },
  architectures: { aarch64: { image: 'base-arm', policies: { onfail: 'shell' } } },
  groups: { gpu: { image: 'gpu', style: 'roram', partitions: { root: '/dev/nvme0n1p4' } } },
  nodes: { plain: {}, g1: { group: 'gpu' }, arm: { arch: 'arm64' }, pinned: { group: 'gpu', image: `base@sha256:${SHA}`, policies: { verify: 'strong' } } },
})

t.test('the most specific layer wins field by field: node, group, architecture, defaults', async (t) => {
  t.match(resolvePlan(config, 'plain'), { ok: true, plan: { style: 'disked', image: { name: 'base' }, imageFrom: 'defaults' } })
  t.match(resolvePlan(config, 'g1'), {
    ok: true,
    plan: { style: 'roram', image: { name: 'gpu' }, imageFrom: 'group', partitions: { cache: 'LABEL=cwcache', root: '/dev/nvme0n1p4' } },
  })
  t.match(resolvePlan(config, 'pinned'), { ok: true, plan: { image: { name: 'base', sha256: SHA }, imageFrom: 'node', policies: { verify: 'strong' } } })
})

t.test('the architecture the node reports picks the image when node and group do not', async (t) => {
  t.match(resolvePlan(config, 'plain', 'aarch64'), { ok: true, plan: { image: { name: 'base-arm' }, imageFrom: 'architecture', arch: 'aarch64', policies: { onfail: 'shell', verify: 'fast' } } })
  t.match(resolvePlan(config, 'arm'), { ok: true, plan: { arch: 'aarch64', image: { name: 'base-arm' } } }, 'arch from the nodes file (arm64 normalised)')
  t.match(resolvePlan(config, 'arm', 'x86_64'), { ok: false, status: 409, code: 'EARCH' }, 'node and nodes file disagree: refuse')
})

t.test('an unknown node is not found', async (t) => {
  t.match(resolvePlan(config, 'ghost'), { ok: false, status: 404, code: 'ENONODE' })
  const noImage = parseNodesConfig({ schema: 1, nodes: { x: {} } })
  t.match(resolvePlan(noImage, 'x'), { ok: false, status: 404, code: 'ENOIMAGE' })
})

t.test('a bad nodes file is refused with the field named', async (t) => {
  const bad: Array<[unknown, string]> = [
    [[], 'nodes file'],
    [{ schema: 2, nodes: {} }, 'schema'],
    [{ schema: 1 }, 'nodes'],
    [{ schema: 1, nodes: { a: { style: 'floppy' } } }, 'nodes.a.style'],
    [{ schema: 1, nodes: { a: { group: 'nope' } } }, 'nodes.a.group'],
    [{ schema: 1, nodes: { a: { arch: 'm68k' } } }, 'nodes.a.arch'],
    [{ schema: 1, nodes: { '../a': {} } }, 'nodes.../a'],
    [{ schema: 1, nodes: { a: { image: '../../etc/passwd' } } }, 'nodes.a.image'],
    [{ schema: 1, nodes: { a: { image: 'x@sha256:1234' } } }, 'nodes.a.image'],
    [{ schema: 1, nodes: { a: { partitions: { cache: 'LABEL=a b' } } } }, 'nodes.a.partitions.cache'],
    [{ schema: 1, nodes: { a: { partitions: { swap: '/dev/sda2' } } } }, 'nodes.a.partitions.swap'],
    [{ schema: 1, nodes: { a: { policies: { cacheFull: 'panic' } } } }, 'nodes.a.policies.cacheFull'],
    [{ schema: 1, nodes: { a: { colour: 'red' } } }, 'nodes.a.colour'],
    [{ schema: 1, nodes: {}, extra: 1 }, 'extra'],
    [{ schema: 1, nodes: {}, images: { x: { arch: 'vax' } } }, 'images.x.arch'],
  ]
  for (const [input, key] of bad) t.throws(() => parseNodesConfig(input), { code: 'ECONFIG', key }, key)
})

/** Object.prototype's names (issue #22, finding 4): each is a node id, group or image name like any other. */
const PROTO_NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString']

t.test('a node id named like an Object.prototype property is not configured unless listed', async (t) => {
  for (const name of [...PROTO_NAMES, '__proto__']) {
    t.match(resolvePlan(config, name), { ok: false, status: 404, code: 'ENONODE' }, name)
    t.equal(configuredNode(config, name), undefined, name)
  }
})

t.test('listed, such a node id is a normal node', async (t) => {
  const c = parseNodesConfig({ schema: 1, defaults: { image: 'base' }, nodes: Object.fromEntries(PROTO_NAMES.map((n) => [n, { style: 'rwram' }])) })
  for (const name of PROTO_NAMES) t.match(resolvePlan(c, name), { ok: true, plan: { node: name, style: 'rwram', image: { name: 'base' } } }, name)
  t.match(resolvePlan(c, 'plain'), { ok: false, code: 'ENONODE' })
  t.throws(() => parseNodesConfig(JSON.parse('{"schema":1,"nodes":{"__proto__":{}}}')), { code: 'ECONFIG', key: 'nodes.__proto__' }, '__proto__ is not a safe name')
})

t.test('a group named toString: used when defined, refused when a node names it and it is not', async (t) => {
  const c = parseNodesConfig({ schema: 1, defaults: { image: 'base' }, groups: { toString: { style: 'roram' } }, nodes: { a: { group: 'toString' }, b: {} } })
  t.match(resolvePlan(c, 'a'), { ok: true, plan: { style: 'roram' } }, 'a defined group named toString is a group')
  t.match(resolvePlan(c, 'b'), { ok: true, plan: { style: 'disked' } }, 'and only for its nodes')
  for (const group of PROTO_NAMES) {
    t.throws(() => parseNodesConfig({ schema: 1, nodes: { a: { group } } }), { code: 'ECONFIG', key: 'nodes.a.group', message: /no group/ }, `undefined group ${group}`)
  }
})

t.test('an architecture named like an Object.prototype property is no architecture', async (t) => {
  for (const arch of PROTO_NAMES) {
    t.equal(normaliseArch(arch), undefined, arch)
    t.throws(() => parseNodesConfig({ schema: 1, nodes: { a: { arch } } }), { code: 'ECONFIG', key: 'nodes.a.arch' }, arch)
    t.throws(() => parseNodesConfig({ schema: 1, nodes: {}, architectures: { [arch]: {} } }), { code: 'ECONFIG', key: `architectures.${arch}` }, arch)
  }
})

t.test('image overrides are looked up by own name only', async (t) => {
  const c = parseNodesConfig({ schema: 1, nodes: {}, images: { valueOf: { arch: 'aarch64' } } })
  t.same(imageOverrides(c, 'valueOf'), { arch: 'aarch64' })
  for (const name of ['constructor', 'toString', 'hasOwnProperty']) t.equal(imageOverrides(c, name), undefined, name)
})

t.test('a node listed as null is a node with no settings of its own, not a crash (found by the fuzz campaign, #22)', async (t) => {
  const c = parseNodesConfig({ schema: 1, defaults: { image: 'base' }, nodes: { n1: null, n2: {} } })
  t.same(configuredNode(c, 'n1'), {}, 'n1 is configured, with nothing of its own')
  t.match(resolvePlan(c, 'n1'), { ok: true, plan: { image: { name: 'base' }, imageFrom: 'defaults' } })
})

t.test('an unknown top-level key is named even when it is empty (found by the fuzz campaign, #22)', async (t) => {
  t.throws(() => parseNodesConfig({ schema: 1, nodes: {}, '': 1 }), { code: 'ECONFIG', message: /^"": unknown top-level key/ })
  t.throws(() => parseNodesConfig({ schema: 1, nodes: {}, node: {} }), { code: 'ECONFIG', message: /"node": unknown top-level key \(expected schema, defaults/ })
})
