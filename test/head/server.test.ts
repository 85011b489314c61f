import t, { type Test } from 'tap'
import { request } from 'node:http'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeEvent } from '../../agent/protocol/event.js'
import { startHead, type Head } from '../../agent/head/server.js'
import { call, imageBytes, postEvents, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'

const X86 = imageBytes(3 * 1024 * 1024 + 123, 1)
const ARM = imageBytes(200_000, 2)

const NODES = {
  schema: 1,
  defaults: {
    image: 'CPE-base',
    style: 'disked',
    partitions: { cache: 'LABEL=cwcache', root: 'LABEL=cwroot' },
    policies: { cacheFull: 'ram', verify: 'fast', onfail: 'reboot' },
  },
  architectures: { aarch64: { image: 'CPE-base-arm' } },
  groups: { gpu: { style: 'rwram', partitions: { cache: 'PARTLABEL=gpucache' } } },
  nodes: { n1: {}, n2: { group: 'gpu' }, n3: { arch: 'aarch64' }, n4: { image: 'CPE-base-arm' }, flood: {}, '52:54:00:12:34:56': {} },
}

const setup = async (t: Test, opts: Partial<Parameters<typeof startHead>[0]> = {}): Promise<{ head: Head; dir: string; nodes: string }> => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  await publishBytes(store, 'CPE-base', X86, { dir })
  await publishBytes(store, 'CPE-base-arm', ARM, { dir, arch: 'aarch64' })
  const nodes = await writeNodes(join(dir, 'nodes.json'), NODES)
  const head = await startHead({ store, nodes, ...opts })
  t.teardown(() => head.close())
  return { head, dir, nodes }
}


const rawGet = (base: string, path: string): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const u = new URL(base)
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })

t.test('a node gets a descriptor that pins the current digest, merged from node, group and defaults', async (t) => {
  const { head } = await setup(t)
  const a = await call(`${head.url}/v1/nodes/n2/boot?arch=x86_64`)
  t.equal(a.status, 200)
  t.same(a.json, {
    schema: 1,
    node: 'n2',
    style: 'rwram',
    image: { name: 'CPE-base', sha256: sha256(X86), size: X86.length, arch: 'x86_64', manifest: `/v1/images/by-digest/${sha256(X86)}/manifest` },
    partitions: { cache: 'PARTLABEL=gpucache', root: 'LABEL=cwroot' },
    policies: { cacheFull: 'ram', verify: 'fast', onfail: 'reboot' },
  })
})

t.test('a node known by its MAC address (percent-encoded or not) gets its descriptor', async (t) => {
  const { head } = await setup(t)
  for (const id of ['52:54:00:12:34:56', encodeURIComponent('52:54:00:12:34:56')]) {
    const a = await call(`${head.url}/v1/nodes/${id}/boot?arch=x86_64`)
    t.equal(a.status, 200, id)
    t.match(a.json, { node: '52:54:00:12:34:56' })
  }
})

t.test('an aarch64 node gets the aarch64 image by architecture, never the x86_64 default', async (t) => {
  const { head } = await setup(t)
  const a = await call(`${head.url}/v1/nodes/n1/boot?arch=aarch64`)
  t.equal(a.status, 200)
  t.match(a.json, { image: { name: 'CPE-base-arm', sha256: sha256(ARM), arch: 'aarch64' } })
  const b = await call(`${head.url}/v1/nodes/n3/boot`)
  t.match(b.json, { image: { name: 'CPE-base-arm' } })
})

t.test('an x86_64 node is refused an aarch64 image with 409, not handed it', async (t) => {
  const { head } = await setup(t)
  const a = await call(`${head.url}/v1/nodes/n4/boot?arch=x86_64`)
  t.equal(a.status, 409)
  t.match(a.json, { error: { code: 'EARCH', message: /CPE-base-arm is aarch64 but node n4 is x86_64/ } })
  const b = await call(`${head.url}/v1/nodes/n3/boot?arch=x86_64`)
  t.equal(b.status, 409, 'node says x86_64, the nodes file says aarch64')
  const c = await call(`${head.url}/v1/nodes/n1/boot?arch=sparc`)
  t.equal(c.status, 400)
})

t.test('manifests are served by name and by digest, and point at the head\'s own image endpoint', async (t) => {
  const { head } = await setup(t)
  const byName = await call(`${head.url}/v1/images/CPE-base/manifest`)
  t.equal(byName.status, 200)
  t.match(byName.json, { name: 'CPE-base', sha256: sha256(X86), size: X86.length, urls: [`/v1/images/by-digest/${sha256(X86)}/image`] })
  t.equal(byName.headers.get('x-image-sha256'), sha256(X86))
  const byDigest = await call(`${head.url}/v1/images/by-digest/${sha256(X86)}/manifest`)
  t.equal(byDigest.text, byName.text)
  const none = await call(`${head.url}/v1/images/Nope/manifest`)
  t.equal(none.status, 404)
  const hist = await call(`${head.url}/v1/images/CPE-base`)
  t.match(hist.json, { name: 'CPE-base', current: { sha256: sha256(X86) }, history: [{ sha256: sha256(X86) }] })
})

t.test('image bytes are served whole, by Range with 206, and 416 outside the file', async (t) => {
  const { head } = await setup(t)
  const url = `${head.url}/v1/images/by-digest/${sha256(X86)}/image`
  const whole = await fetch(url)
  t.equal(whole.status, 200)
  t.equal(whole.headers.get('accept-ranges'), 'bytes')
  t.equal(sha256(Buffer.from(await whole.arrayBuffer())), sha256(X86))
  const part = await fetch(url, { headers: { range: 'bytes=1048576-2097151' } })
  t.equal(part.status, 206)
  t.equal(part.headers.get('content-range'), `bytes 1048576-2097151/${X86.length}`)
  t.ok(Buffer.from(await part.arrayBuffer()).equals(X86.subarray(1048576, 2097152)))
  const tail = await fetch(url, { headers: { range: 'bytes=-100' } })
  t.equal(tail.status, 206)
  t.ok(Buffer.from(await tail.arrayBuffer()).equals(X86.subarray(X86.length - 100)))
  const open = await fetch(url, { headers: { range: `bytes=${X86.length - 5}-` } })
  t.equal(open.status, 206)
  t.equal((await open.arrayBuffer()).byteLength, 5)
  const out = await fetch(url, { headers: { range: `bytes=${X86.length}-` } })
  t.equal(out.status, 416)
  t.equal(out.headers.get('content-range'), `bytes */${X86.length}`)
  await out.arrayBuffer()
  const head1 = await fetch(url, { method: 'HEAD' })
  t.equal(head1.headers.get('content-length'), String(X86.length))
  const missing = await call(`${head.url}/v1/images/by-digest/${'0'.repeat(64)}/image`)
  t.equal(missing.status, 404)
})

t.test('with mirrors and redirects on, image requests get a 302 to the mirror', async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  await publishBytes(store, 'CPE-base', X86, { dir, mirrors: ['http://mirror.example/CPE-base.sqfs'] })
  const head = await startHead({ store, nodes: { schema: 1, defaults: {}, architectures: {}, groups: {}, nodes: {}, images: {} }, redirectToMirrors: true })
  t.teardown(() => head.close())
  const res = await fetch(`${head.url}/v1/images/by-digest/${sha256(X86)}/image`, { redirect: 'manual' })
  t.equal(res.status, 302)
  t.equal(res.headers.get('location'), 'http://mirror.example/CPE-base.sqfs')
})

t.test('events are stored once per id and show up as the node\'s last boot', async (t) => {
  const { head } = await setup(t)
  const boot = makeEvent('boot', 'n1', { record: { result: 'ok', style: 'disked', fallbacks: [] } }, { image: { name: 'CPE-base', sha256: sha256(X86) } })
  const a = await postEvents(head.url, 'n1', [boot])
  t.same([a.status, a.json], [200, { accepted: 1, duplicates: 0 }])
  const b = await postEvents(head.url, 'n1', [boot])
  t.same([b.status, b.json], [200, { accepted: 0, duplicates: 1 }])
  const v = await call(`${head.url}/v1/nodes/n1`)
  t.match(v.json, { node: 'n1', events: 1, lastBoot: { result: 'ok', image: { sha256: sha256(X86) } }, running: { sha256: sha256(X86), source: 'boot' } })
  const status = makeEvent('status', 'n1', { arch: 'x86_64', memory: { totalBytes: 1024 } }, { image: { name: 'CPE-base', sha256: sha256(X86) } })
  await postEvents(head.url, 'n1', [status])
  const w = await call(`${head.url}/v1/nodes/n1`)
  t.match(w.json, { events: 2, lastStatus: { eventId: status.id, data: { arch: 'x86_64' } }, running: { source: 'status' }, lastEventAt: status.time })
})

t.test('a bearer token, when set, is required on every endpoint', async (t) => {
  const { head } = await setup(t, { token: 's3cret' })
  const none = await call(`${head.url}/v1/nodes/n1/boot`)
  t.equal(none.status, 401)
  t.equal(none.headers.get('www-authenticate'), 'Bearer realm="boot-agent"')
  const wrong = await call(`${head.url}/v1/consistency`, { headers: { authorization: 'Bearer nope' } })
  t.equal(wrong.status, 401)
  const right = await call(`${head.url}/v1/nodes/n1/boot`, { headers: { authorization: 'Bearer s3cret' } })
  t.equal(right.status, 200)
})

t.test('bad input', async (t) => {
  const { head, dir } = await setup(t, { maxBodyBytes: 64 * 1024, rateLimit: { burstEvents: 50, eventsPerSecond: 5 } })
  const eventsFile = join(dir, 'store', 'events', 'n1.jsonl')
  const stored = async (): Promise<string> => readFile(eventsFile, 'utf8').catch(() => '')

  t.test('an oversized body is refused with 413 and nothing is stored', async (t) => {
    const big = Array.from({ length: 400 }, () => makeEvent('status', 'n1', { hostname: 'x'.repeat(200) }))
    const a = await postEvents(head.url, 'n1', big)
    t.equal(a.status, 413)
    t.match(a.json, { error: { code: 'ETOOLARGE', limit: 64 * 1024 } })
    t.equal(await stored(), '')
    // A body that lies about nothing but keeps streaming past the limit (chunked, no length).
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = request(`${head.url}/v1/nodes/n1/events`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      req.write('{"events":[')
      for (let i = 0; i < 100; i++) req.write(JSON.stringify(makeEvent('status', 'n1', { hostname: 'y'.repeat(1000) })) + ',')
      req.end('{}]}')
    })
    t.equal(streamed, 413)
    t.equal(await stored(), '')
  })

  t.test('malformed JSON is refused with 400 saying what is wrong', async (t) => {
    const a = await call(`${head.url}/v1/nodes/n1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"events": [' })
    t.equal(a.status, 400)
    t.match(a.json, { error: { code: 'EBADJSON', message: /not valid JSON/ } })
    const good = makeEvent('status', 'n1', {})
    const b = await postEvents(head.url, 'n1', [good, { ...makeEvent('status', 'n1', {}), kind: 'reboot-now' }])
    t.equal(b.status, 400)
    t.match(b.json, { error: { code: 'EBADEVENT', field: 'events[1].kind' } })
    const c = await postEvents(head.url, 'n1', [{ ...good, node: 'n2' }])
    t.match(c.json, { error: { field: 'events[0].node' } })
    const d = await postEvents(head.url, 'n1', [{ ...good, image: { sha256: 'not-hex' } }])
    t.match(d.json, { error: { field: 'events[0].image.sha256' } })
    t.equal(await stored(), '', 'the good event of a bad batch was not stored either')
  })

  t.test('an unknown node is 404 on every node endpoint', async (t) => {
    for (const [path, init] of [
      ['/v1/nodes/ghost/boot', {}],
      ['/v1/nodes/ghost', {}],
      ['/v1/nodes/ghost/events', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: [makeEvent('status', 'ghost', {})] }) }],
    ] as const) {
      const a = await call(`${head.url}${path}`, init)
      t.equal(a.status, 404, path)
      t.match(a.json, { error: { code: 'ENONODE', message: /ghost/ } }, path)
    }
  })

  t.test('names with / or .. are refused with 400, never looked up', async (t) => {
    // Raw paths (fetch would normalise `..` away before sending).
    for (const path of ['/v1/images/..%2F..%2Fetc%2Fpasswd/manifest', '/v1/images/a%2Fb/manifest', '/v1/images/../manifest', '/v1/images/x..y/manifest', '/v1/nodes/..%2Fn1/boot', '/v1/nodes/%2e%2e/boot', '/v1/nodes/../events']) {
      const a = await rawGet(head.url, path)
      t.equal(a.status, 400, path)
      t.match(JSON.parse(a.body), { error: { code: 'EBADNAME' } }, path)
    }
    const digest = await call(`${head.url}/v1/images/by-digest/ABC/image`)
    t.equal(digest.status, 400)
  })

  t.test('an event flood from one node gets 429 with Retry-After; others are not affected', async (t) => {
    const batch = (): unknown[] => Array.from({ length: 30 }, () => makeEvent('io-error', 'flood', { device: 'sda' }))
    const first = await postEvents(head.url, 'flood', batch())
    t.equal(first.status, 200)
    const second = await postEvents(head.url, 'flood', batch())
    t.equal(second.status, 429)
    t.ok(Number(second.headers.get('retry-after')) >= 1, 'Retry-After in seconds')
    t.match(second.json, { error: { code: 'ERATE' } })
    const lines = (await readFile(join(dir, 'store', 'events', 'flood.jsonl'), 'utf8')).trim().split('\n')
    t.equal(lines.length, 30, 'only the accepted batch was stored')
    const other = await postEvents(head.url, 'n2', [makeEvent('status', 'n2', {})])
    t.equal(other.status, 200)
  })

  t.test('unknown endpoints are 404, wrong methods 405', async (t) => {
    t.equal((await call(`${head.url}/v2/nodes/n1/boot`)).status, 404)
    const m = await call(`${head.url}/v1/nodes/n1/boot`, { method: 'DELETE' })
    t.equal(m.status, 405)
    t.equal(m.headers.get('allow'), 'GET, HEAD')
  })
})

t.test('reload keeps the old nodes file when the new one is invalid, and takes a valid one', async (t) => {
  const { head, nodes } = await setup(t)
  await writeFile(nodes, '{"schema": 1, "nodes": {"n1": {"style": "floppy"}}}')
  t.equal(await head.reload(), false)
  t.equal((await call(`${head.url}/v1/nodes/n2/boot`)).status, 200, 'old config still served')
  await writeNodes(nodes, { ...NODES, nodes: { n9: {} } })
  t.equal(await head.reload(), true)
  t.equal((await call(`${head.url}/v1/nodes/n2/boot`)).status, 404)
  t.equal((await call(`${head.url}/v1/nodes/n9/boot`)).status, 200)
})

t.test('a graceful close lets a request in flight finish', async (t) => {
  const { head } = await setup(t)
  const res = await fetch(`${head.url}/v1/images/by-digest/${sha256(X86)}/image`)
  const closing = head.close()
  const body = Buffer.from(await res.arrayBuffer())
  await closing
  t.equal(sha256(body), sha256(X86))
  await t.rejects(fetch(`${head.url}/v1/nodes/n1/boot`))
})

t.test('the head reads the time from the clock it is given: the consistency view and the rate limit', async (t) => {
  let now = Date.parse('2030-01-02T03:04:05.000Z')
  const { head } = await setup(t, { clock: { now: () => now }, rateLimit: { burstEvents: 2, eventsPerSecond: 1 } })
  t.match((await call(`${head.url}/v1/consistency`)).json, { generatedAt: '2030-01-02T03:04:05.000Z' })
  const status = (): unknown => makeEvent('status', 'n1', {})
  t.equal((await postEvents(head.url, 'n1', [status(), status()])).status, 200)
  t.equal((await postEvents(head.url, 'n1', [status()])).status, 429, 'the clock stood still: no token earned back')
  now += 1000
  t.equal((await postEvents(head.url, 'n1', [status()])).status, 200, 'one second later by the clock: one token back')
})

t.test('node ids named like Object.prototype properties: unknown unless listed, then normal nodes (issue #22, finding 4)', async (t) => {
  const PROTO_NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf']
  const dir = t.testdir()
  const store = join(dir, 'store')
  await publishBytes(store, 'CPE-base', ARM, { dir })
  const eventsFor = async (node: string): Promise<string> => readFile(join(store, 'events', `${node}.jsonl`), 'utf8').catch(() => '')

  const stranger = await startHead({ store, nodes: await writeNodes(join(dir, 'plain.json'), { schema: 1, defaults: { image: 'CPE-base' }, nodes: { n1: {} } }) })
  t.teardown(() => stranger.close())
  for (const node of [...PROTO_NAMES, '__proto__']) {
    // __proto__ is not even a name (a leading _): refused before any lookup, as a name with / is.
    const [status, code] = node === '__proto__' ? [400, 'EBADNAME'] : [404, 'ENONODE']
    for (const [path, init] of [
      [`/v1/nodes/${node}/boot`, {}],
      [`/v1/nodes/${node}`, {}],
      [`/v1/nodes/${node}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: [makeEvent('status', node, {})] }) }],
    ] as const) {
      const a = await call(`${stranger.url}${path}`, init)
      t.same([a.status, (a.json as { error?: { code?: string } }).error?.code], [status, code], `${node}: ${init.method ?? 'GET'} ${path}`)
    }
    t.equal(await eventsFor(node), '', `${node}: nothing stored`)
  }
  const view = (await call(`${stranger.url}/v1/consistency`)).json as { images: Array<{ nodes: Record<string, string> }> }
  t.same(view.images.flatMap((i) => Object.keys(i.nodes)), [], 'the consistency view names none of them')
  await stranger.close()

  const listed = await startHead({ store, nodes: await writeNodes(join(dir, 'listed.json'), { schema: 1, defaults: { image: 'CPE-base' }, nodes: Object.fromEntries(PROTO_NAMES.map((n) => [n, {}])) }) })
  t.teardown(() => listed.close())
  for (const node of PROTO_NAMES) {
    const d = await call(`${listed.url}/v1/nodes/${node}/boot?arch=x86_64`)
    t.match([d.status, d.json], [200, { node, image: { name: 'CPE-base', sha256: sha256(ARM) } }], `${node}: a descriptor`)
    const e = makeEvent('status', node, {}, { image: { name: 'CPE-base', sha256: sha256(ARM) } })
    t.match(await postEvents(listed.url, node, [e]), { status: 200, json: { accepted: 1, duplicates: 0 } }, `${node}: its events are stored`)
    t.match((await call(`${listed.url}/v1/nodes/${node}`)).json, { node, configured: true, events: 1 }, `${node}: its view`)
  }
  const listedView = (await call(`${listed.url}/v1/consistency`)).json as { images: Array<{ name: string; nodes: Record<string, string> }> }
  t.same(listedView.images.find((i) => i.name === 'CPE-base')?.nodes, Object.fromEntries(PROTO_NAMES.map((n) => [n, sha256(ARM)])))
})
