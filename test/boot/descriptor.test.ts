import t from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { DescriptorError, fetchDescriptor, nodeArch, parseDescriptor, resolveNodeId } from '../../agent/boot/descriptor.js'

const sha = 'b'.repeat(64)
const good = (node = 'n1') => ({
  schema: 1,
  node,
  style: 'disked',
  image: { name: 'img', sha256: sha, size: 4096, manifest: '/v1/images/img/manifest' },
  partitions: { cache: 'LABEL=cwcache', root: '/dev/vdb2' },
  policies: { cacheFull: 'clear-reboot', verify: 'strong', onfail: 'reboot' },
})

/** A real HTTP server on loopback answering from a script of handlers, one per request. */
const serve = async (t: { teardown: (fn: () => Promise<void>) => void }, handlers: Array<(req: IncomingMessage, res: ServerResponse) => void>) => {
  const seen: string[] = []
  let i = 0
  const srv = createServer((req, res) => {
    seen.push(req.url ?? '')
    const h = handlers[Math.min(i++, handlers.length - 1)]
    h?.(req, res)
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())))
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen }
}
const json = (status: number, body: unknown, headers: Record<string, string> = {}) => (_: IncomingMessage, res: ServerResponse) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}
const noSleep = async () => {}

t.test('a valid descriptor is typed, its manifest URL resolved against the server', async (t) => {
  const d = parseDescriptor(good(), 'http://10.0.0.1:8080')
  t.equal(d.image.manifest, 'http://10.0.0.1:8080/v1/images/img/manifest')
  t.same(d.partitions.cache, { kind: 'label', value: 'cwcache', text: 'LABEL=cwcache' })
  t.same(d.policies, { cacheFull: 'clear-reboot', verify: 'strong', onfail: 'reboot' })
})

t.test('a descriptor field out of the protocol is an error naming the field', async (t) => {
  const bad = (mut: (o: ReturnType<typeof good>) => unknown, field: string) => {
    const o = good()
    const v = mut(o) ?? o
    t.throws(() => parseDescriptor(v, 'http://h'), { code: 'EDESCRIPTOR', field }, field)
  }
  bad(() => 'nope', '$')
  bad((o) => ({ ...o, schema: 2 }), 'schema')
  bad((o) => ({ ...o, style: 'diskless' }), 'style')
  bad((o) => ({ ...o, image: { ...o.image, sha256: 'ABC' } }), 'image.sha256')
  bad((o) => ({ ...o, image: { ...o.image, size: -1 } }), 'image.size')
  bad((o) => ({ ...o, image: { ...o.image, manifest: 'file:///etc/passwd' } }), 'image.manifest')
  bad((o) => ({ ...o, partitions: { root: 'sda2' } }), 'partitions.root')
  bad((o) => ({ ...o, policies: { onfail: 'explode' } }), 'policies.onfail')
})

t.test('fetchDescriptor asks for this node and retries transient failures', async (t) => {
  const srv = await serve(t, [json(503, {}), json(429, {}, { 'retry-after': '0' }), json(200, good('node-7'))])
  const d = await fetchDescriptor(srv.url, 'node-7', { timeoutMs: 2000, sleep: noSleep })
  t.equal(d.node, 'node-7')
  const q = `/v1/nodes/node-7/boot?arch=${nodeArch()}`
  t.same(srv.seen, [q, q, q])
})

t.test('a 404 is final, not retried', async (t) => {
  const srv = await serve(t, [json(404, { error: 'unknown node' })])
  await t.rejects(fetchDescriptor(srv.url, 'n1', { timeoutMs: 2000, sleep: noSleep }), { code: 'EHTTP', status: 404 })
  t.equal(srv.seen.length, 1)
})

t.test('a server that never answers well fails after the bounded attempts', async (t) => {
  const srv = await serve(t, [json(500, {})])
  await t.rejects(fetchDescriptor(srv.url, 'n1', { timeoutMs: 2000, attempts: 3, sleep: noSleep }), { code: 'EHTTP', status: 500 })
  t.equal(srv.seen.length, 3)
})

t.test('an unreachable server is a network error after retries', async (t) => {
  const srv = await serve(t, [json(200, {})])
  const dead = srv.url.replace(/:\d+$/, ':1')
  await t.rejects(fetchDescriptor(dead, 'n1', { timeoutMs: 1000, attempts: 2, sleep: noSleep }), { code: 'ENETWORK' })
})

t.test('a descriptor for another node or not JSON is refused', async (t) => {
  const srv = await serve(t, [json(200, good('other')), (_q, r) => r.end('<html>')])
  await t.rejects(fetchDescriptor(srv.url, 'n1', { timeoutMs: 2000, sleep: noSleep }), { code: 'EDESCRIPTOR', field: 'node' })
  await t.rejects(fetchDescriptor(srv.url, 'n1', { timeoutMs: 2000, sleep: noSleep }), DescriptorError)
})

t.test('a descriptor with a key twice is refused, naming it (JSON.parse would keep the last)', async (t) => {
  const text = JSON.stringify(good()).replace('"node":"n1"', '"node":"n1","node":"n1"')
  const srv = await serve(t, [(_q, r) => r.end(text)])
  await t.rejects(fetchDescriptor(srv.url, 'n1', { timeoutMs: 2000, sleep: noSleep }), { code: 'EDESCRIPTOR', field: '$', message: /key "node" twice/ })
})

t.test('node id: command line, else DMI UUID, else the first MAC', async (t) => {
  const uuid = '4c4c4544-0042-3510-8052-b4c04f563232'
  t.same(await resolveNodeId({ fromCmdline: 'x1', readDmiUuid: async () => uuid }), { node: 'x1', source: 'cmdline' })
  t.same(await resolveNodeId({ readDmiUuid: async () => uuid.toUpperCase() + '\n', listMacs: async () => [] }), { node: uuid, source: 'dmi' })
  t.same(
    await resolveNodeId({ readDmiUuid: async () => '00000000-0000-0000-0000-000000000000', listMacs: async () => ['00:00:00:00:00:00', '52:54:00:AB:CD:EF'] }),
    { node: '52:54:00:ab:cd:ef', source: 'mac' },
    'a placeholder UUID and a zero MAC are skipped',
  )
  await t.rejects(resolveNodeId({ readDmiUuid: async () => undefined, listMacs: async () => [] }), { code: 'ECONFIG', key: 'rd.bootagent.node' })
})

t.test('an image of another architecture is refused, naming image.arch', async (t) => {
  const other = nodeArch() === 'x86_64' ? 'aarch64' : 'x86_64'
  const d = good()
  t.throws(() => parseDescriptor({ ...d, image: { ...d.image, arch: other } }, 'http://h'), { code: 'EDESCRIPTOR', field: 'image.arch' })
  t.throws(() => parseDescriptor({ ...d, image: { ...d.image, arch: 'x86 64; rm' } }, 'http://h'), { code: 'EDESCRIPTOR', field: 'image.arch' })
  t.equal(parseDescriptor({ ...d, image: { ...d.image, arch: nodeArch() } }, 'http://h').image.arch, nodeArch())
})
