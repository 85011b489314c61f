/**
 * Node identity at the real head (issue #22, finding 7; docs/security.md):
 * a request speaking as node X (its descriptor, its events) is refused (403
 * EIDENTITY, logged at warn, nothing stored) when it comes from an address
 * the nodes file does not bind X to, or carries another node's credential,
 * or the site token for a node with a credential of its own. Requests come
 * from real loopback aliases (127.0.0.2, 127.0.0.3: Linux routes all of
 * 127/8 to lo, so a socket can bind any of them as its source).
 */
import t, { type Test } from 'tap'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { parseNodesConfig } from '../../agent/head/nodes-config.js'
import { startHead, type Head } from '../../agent/head/server.js'
import { createLogger } from '../../agent/core/log.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { imageBytes, publishBytes, writeNodes } from '../helpers/head-fixtures.js'

/** What the nodes file holds for a node's token (docs/security.md): its sha256, never the token. */
const tokenSha256 = (token: string): string => createHash('sha256').update(token).digest('hex')
const SITE = 'site-token-0123456789abcdef'
const TOKEN_N3 = 'n3-token-5b0c1e7a9d4f2a6b8c0d1e2f3a4b5c6d'
const TOKEN_N4 = 'n4-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0'

interface Answer {
  status: number
  json: { error?: { code?: string; message?: string } } & Record<string, unknown>
}

/** One request from `from` (a loopback alias) to the head, optionally with a bearer token. */
const ask = (head: Head, opts: { path: string; from?: string; token?: string; method?: string; body?: unknown }): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const body = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body))
    const req = request(
      {
        host: '127.0.0.1',
        port: head.port,
        path: opts.path,
        method: opts.method ?? (body ? 'POST' : 'GET'),
        localAddress: opts.from ?? '127.0.0.1',
        headers: {
          ...(body ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {}),
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        },
      },
      (res) => {
        const parts: Buffer[] = []
        res.on('data', (c: Buffer) => parts.push(c))
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8')
          let json: Answer['json'] = {}
          try {
            json = JSON.parse(text) as Answer['json']
          } catch {
            // not JSON: image bytes
          }
          resolve({ status: res.statusCode ?? 0, json })
        })
      },
    )
    req.on('error', reject)
    req.end(body)
  })

const batch = (node: string, n = 1) => ({ events: Array.from({ length: n }, () => makeEvent('status', node, {})) })

/** A head at 127.0.0.1 with the given nodes file (and site token), logging to a file the test reads. */
const headWith = async (t: Test, nodes: unknown, token?: string) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const logPath = join(dir, 'head.log')
  const fd = openSync(logPath, 'w')
  const head = await startHead({ store, nodes: await writeNodes(join(dir, 'nodes.json'), nodes), log: createLogger({ fd, level: 'info' }), ...(token ? { token } : {}) })
  t.teardown(async () => {
    await head.close({ abort: true })
    closeSync(fd)
  })
  const published = await publishBytes(store, 'os', imageBytes(64 * 1024))
  const stored = (node: string): number => storedCount(store, node)
  const log = (): string => readFileSync(logPath, 'utf8')
  return { head, store, published, stored, log }
}

const storedCount = (store: string, node: string): number => {
  try {
    return readFileSync(join(store, 'events', `${node}.jsonl`), 'utf8').split('\n').filter(Boolean).length
  } catch {
    return 0
  }
}

t.test('bound by address: a node posting or asking as another node from its own address is refused, 403, logged at warn, nothing stored', async (t) => {
  const { head, stored, log } = await headWith(t, {
    schema: 1,
    defaults: { image: 'os', style: 'rwram' },
    groups: { rack: { addresses: ['127.0.0.0/29'] } },
    nodes: { n1: { addresses: ['127.0.0.2'] }, n2: { addresses: ['127.0.0.3'] }, n5: { group: 'rack' }, n9: {} },
  })
  // n2 (at 127.0.0.3) speaks as n1.
  const posted = await ask(head, { path: '/v1/nodes/n1/events', from: '127.0.0.3', body: batch('n1') })
  t.equal(posted.status, 403)
  t.equal(posted.json.error?.code, 'EIDENTITY')
  t.match(posted.json.error?.message, /node n1 may not speak from 127\.0\.0\.3/)
  t.notMatch(posted.json.error?.message, /127\.0\.0\.2/, 'the bound addresses are not told')
  t.equal(stored('n1'), 0, 'nothing stored for n1')
  const desc = await ask(head, { path: '/v1/nodes/n1/boot', from: '127.0.0.3' })
  t.equal(desc.status, 403, "n1's descriptor is not handed to n2")
  // n1 from its own address: accepted.
  t.equal((await ask(head, { path: '/v1/nodes/n1/events', from: '127.0.0.2', body: batch('n1') })).status, 200)
  t.equal((await ask(head, { path: '/v1/nodes/n1/boot', from: '127.0.0.2' })).status, 200)
  t.equal(stored('n1'), 1)
  // A group's CIDR binds its nodes; a node with no binding stays open (as before).
  t.equal((await ask(head, { path: '/v1/nodes/n5/events', from: '127.0.0.5', body: batch('n5') })).status, 200, 'n5 inside its group CIDR')
  t.equal((await ask(head, { path: '/v1/nodes/n5/events', from: '127.0.0.9', body: batch('n5') })).status, 403, 'n5 outside its group CIDR')
  t.equal((await ask(head, { path: '/v1/nodes/n9/events', from: '127.0.0.9', body: batch('n9') })).status, 200, 'an unbound node: no check')
  // The operator's read of a node's view is not a claim to be it.
  t.equal((await ask(head, { path: '/v1/nodes/n1', from: '127.0.0.9' })).status, 200)
  const warns = log().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: string; status?: number; code?: string; msg: string })
  const refused = warns.filter((l) => l.code === 'EIDENTITY')
  t.equal(refused.length, 3, 'each refusal logged once')
  t.ok(refused.every((l) => l.level === 'warn' && l.status === 403 && /may not speak from/.test(l.msg)))
})

t.test('bound by credential: another node\'s credential, no credential, or the site token cannot speak for a node with its own', async (t) => {
  const { head, stored, log, published } = await headWith(
    t,
    {
      schema: 1,
      defaults: { image: 'os', style: 'rwram' },
      nodes: { n3: { tokenSha256: tokenSha256(TOKEN_N3) }, n4: { tokenSha256: tokenSha256(TOKEN_N4) }, legacy: {} },
    },
    SITE,
  )
  const as = (node: string, token: string | undefined, body = batch(node)) => ask(head, { path: `/v1/nodes/${node}/events`, ...(token ? { token } : {}), body })
  const byN3 = await as('n4', TOKEN_N3)
  t.equal(byN3.status, 403, "n3's credential posting as n4")
  t.match(byN3.json.error, { code: 'EIDENTITY', message: /another node's credential/ })
  t.equal((await ask(head, { path: '/v1/nodes/n4/boot', token: TOKEN_N3 })).status, 403, "n3's credential asking n4's descriptor")
  const bySite = await as('n4', SITE)
  t.equal(bySite.status, 403, 'the site token for a node that has its own credential')
  t.match(bySite.json.error?.message, /site token cannot speak for it/)
  t.equal((await as('n4', undefined)).status, 401, 'no token at all')
  t.equal((await as('n4', 'not-a-token')).status, 401, 'an unknown token')
  t.equal(stored('n4'), 0, 'nothing stored for n4')
  // Each node with its own credential, and the site token for a node without one (backwards compatible).
  t.equal((await as('n4', TOKEN_N4)).status, 200)
  t.equal((await as('n3', TOKEN_N3)).status, 200)
  t.equal((await as('legacy', SITE)).status, 200)
  t.equal((await as('legacy', TOKEN_N3)).status, 403, 'a node credential never speaks for another node, bound or not')
  // A batch is one node's: an event naming another node inside n3's own batch is refused whole.
  const mixed = await as('n3', TOKEN_N3, { events: [...batch('n3').events, ...batch('n4').events] })
  t.equal(mixed.status, 400, 'a mixed batch is refused')
  t.match(mixed.json.error?.message, /events\[1\]\.node/)
  t.equal(stored('n3'), 1, 'only the first, separate batch of n3 is stored')
  t.equal(stored('n4'), 1)
  // What a boot needs, with the node's own credential; the operator views need the site token.
  t.equal((await ask(head, { path: `/v1/images/by-digest/${published.sha256}/manifest`, token: TOKEN_N3 })).status, 200)
  t.equal((await ask(head, { path: '/v1/images/os/manifest', token: TOKEN_N3 })).status, 200)
  t.equal((await ask(head, { path: `/v1/images/by-digest/${published.sha256}/image`, token: TOKEN_N3 })).status, 200)
  t.equal((await ask(head, { path: '/v1/consistency', token: TOKEN_N3 })).status, 403, 'a node credential does not read the fleet view')
  t.equal((await ask(head, { path: '/v1/consistency', token: SITE })).status, 200)
  t.equal((await ask(head, { path: '/v1/nodes/n3', token: TOKEN_N3 })).status, 200, 'a node reads its own view')
  t.equal((await ask(head, { path: '/v1/nodes/n4', token: TOKEN_N3 })).status, 403, "but not another node's")
  // No token, digest or token fragment in any answer or log line.
  const text = log()
  for (const secret of [SITE, TOKEN_N3, TOKEN_N4, tokenSha256(TOKEN_N3), tokenSha256(TOKEN_N4)]) t.notOk(text.includes(secret), 'the head log holds no token or digest')
  t.ok(text.includes('"code":"EIDENTITY"'))
})

t.test('a reload changes the bindings in force', async (t) => {
  const dir = t.testdir()
  const nodesPath = join(dir, 'nodes.json')
  await writeNodes(nodesPath, { schema: 1, defaults: { image: 'os' }, nodes: { n1: { addresses: ['127.0.0.2'] } } })
  const head = await startHead({ store: join(dir, 'store'), nodes: nodesPath })
  t.teardown(() => head.close({ abort: true }))
  t.equal((await ask(head, { path: '/v1/nodes/n1/events', from: '127.0.0.3', body: batch('n1') })).status, 403)
  await writeNodes(nodesPath, { schema: 1, defaults: { image: 'os' }, nodes: { n1: { addresses: ['127.0.0.3'] } } })
  t.ok(await head.reload())
  t.equal((await ask(head, { path: '/v1/nodes/n1/events', from: '127.0.0.3', body: batch('n1') })).status, 200)
})

t.test('the nodes file: addresses and credentials are checked, naming the field', async (t) => {
  const nodes = (n: unknown, groups?: unknown) => parseNodesConfig({ schema: 1, ...(groups ? { groups } : {}), nodes: n })
  t.same(nodes({ a: { addresses: ['10.0.0.1', '10.1.0.0/16', 'fd00::/64'] } }).nodes.a?.addresses, ['10.0.0.1', '10.1.0.0/16', 'fd00::/64'])
  t.throws(() => nodes({ a: { addresses: ['10.0.0.0/33'] } }), { code: 'ECONFIG', key: 'nodes.a.addresses[0]' })
  t.throws(() => nodes({ a: { addresses: ['node1.example'] } }), { code: 'ECONFIG', key: 'nodes.a.addresses[0]' })
  t.throws(() => nodes({ a: { addresses: [] } }), { code: 'ECONFIG', key: 'nodes.a.addresses' })
  t.throws(() => nodes({}, { g: { addresses: '10.0.0.0/8' } }), { code: 'ECONFIG', key: 'groups.g.addresses' })
  t.throws(() => nodes({ a: { tokenSha256: TOKEN_N3 } }), { code: 'ECONFIG', key: 'nodes.a.tokenSha256', message: /never the token itself/ })
  const h = tokenSha256(TOKEN_N3)
  t.throws(() => nodes({ a: { tokenSha256: h }, b: { tokenSha256: h } }), { code: 'ECONFIG', key: 'nodes.b.tokenSha256', message: /each node needs its own token/ })
})
