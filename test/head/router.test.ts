import t from 'tap'
import { HttpProblem } from '../../agent/head/http-util.js'
import { parseTarget, Router } from '../../agent/head/router.js'
import { type HeadHandlers, headRoutes } from '../../agent/head/routes.js'

// Each handler is its own name, so a match says which one a request reaches.
const HANDLERS: HeadHandlers<string> = {
  root: 'root',
  consistency: 'consistency',
  node: 'node',
  nodes: 'nodes',
  descriptor: 'descriptor',
  events: 'events',
  images: 'images',
  imageName: 'imageName',
  manifestByName: 'manifestByName',
  manifestByDigest: 'manifestByDigest',
  imageBytes: 'imageBytes',
}
const router = new Router(headRoutes(HANDLERS))
const SHA = 'ab'.repeat(32)

const problem = (fn: () => unknown): HttpProblem => {
  try {
    fn()
  } catch (e) {
    if (e instanceof HttpProblem) return e
    throw e
  }
  throw new Error('no problem thrown')
}

t.test('every endpoint reaches its handler with its checked parameters and its stats name', async (t) => {
  const cases: Array<[string, string, string, string, Record<string, string>]> = [
    ['GET', '/v1', 'root', 'root', {}],
    ['HEAD', '/v1/', 'root', 'root', {}],
    ['GET', '/v1/consistency', 'consistency', 'consistency', {}],
    ['GET', '/v1/nodes/n1', 'node', 'node', { node: 'n1' }],
    ['GET', '/v1/nodes/52%3A54%3A00%3A12%3A34%3A56/boot?arch=x86_64', 'descriptor', 'descriptor', { node: '52:54:00:12:34:56' }],
    ['POST', '/v1/nodes/n1/events', 'events', 'events', { node: 'n1' }],
    ['GET', '/v1/images', 'images', 'images', {}],
    ['GET', '/v1/images/CPE-base', 'imageName', 'image-name', { image: 'CPE-base' }],
    ['HEAD', '/v1/images/CPE-base/manifest', 'manifestByName', 'manifest', { image: 'CPE-base' }],
    ['GET', `/v1/images/by-digest/${SHA}/manifest`, 'manifestByDigest', 'manifest', { digest: SHA }],
    ['GET', `/v1/images/by-digest/${SHA}/image`, 'imageBytes', 'image', { digest: SHA }],
  ]
  for (const [method, path, handler, name, params] of cases) {
    const m = router.route(method, path)
    t.same([m.route.handler, m.route.name, m.params], [handler, name, params], `${method} ${path}`)
  }
  t.equal(router.route('GET', '/v1/nodes/n1/boot?arch=aarch64').query.get('arch'), 'aarch64', 'the query comes along')
})

/** What `method path` is refused with. */
const refusal = (method: string, path: string): Pick<HttpProblem, 'status' | 'code' | 'message' | 'details' | 'headers'> => {
  const { status, code, message, details, headers } = problem(() => router.route(method, path))
  return { status, code, message, details, headers }
}

t.test('a wrong method is 405 with the Allow header of the endpoint', async (t) => {
  const readOnly = { status: 405, code: 'EMETHOD', message: 'method not allowed here (allowed: GET, HEAD)', headers: { allow: 'GET, HEAD' } }
  t.same(refusal('DELETE', '/v1/nodes/n1/boot'), { ...readOnly, details: {} })
  t.match(refusal('POST', '/v1'), readOnly)
  t.match(refusal('PUT', '/v1/consistency'), readOnly)
  t.match(refusal('GET', '/v1/nodes/n1/events'), { status: 405, message: 'method not allowed here (allowed: POST)', headers: { allow: 'POST' } })
})

t.test('the image tree is read-only: any other method is 405 anywhere under it, before names are checked', async (t) => {
  for (const path of ['/v1/images', '/v1/images/no/such/endpoint', '/v1/images/..', `/v1/images/by-digest/ABC/image`]) {
    t.match(refusal('POST', path), { status: 405, headers: { allow: 'GET, HEAD' } }, path)
  }
})

t.test('GET /v1/nodes lists every node (issue #21); it is read-only', async (t) => {
  t.equal(router.match('GET', parseTarget('/v1/nodes')).route.handler, 'nodes')
  t.equal(router.match('HEAD', parseTarget('/v1/nodes')).route.handler, 'nodes')
  t.match(refusal('POST', '/v1/nodes'), { status: 405 })
})

t.test('unknown endpoints are 404 naming the path', async (t) => {
  for (const path of ['/v1//', '/v1/consistency/x', '/v1/nodes/n1/other', '/v1/images/CPE-base/x', '/v1/images/by-digest', `/v1/images/by-digest/${SHA}`, `/v1/images/by-digest/${SHA}/other`, '/v1/images/by-digest/ABC']) {
    t.match(refusal('GET', path), { status: 404, code: 'ENOTFOUND', message: `no such endpoint ${path}` }, path)
  }
  t.match(refusal('GET', '/v2/nodes/n1/boot'), { status: 404, message: 'no such endpoint /v2/nodes/n1/boot (this server speaks /v1)' })
})

t.test('a bad name is 400 wherever it stands under /v1/nodes or /v1/images, never looked up', async (t) => {
  for (const path of ['/v1/nodes/..%2Fn1/boot', '/v1/nodes/BAD!/x/y/z', '/v1/nodes/']) {
    t.match(refusal('GET', path), { status: 400, code: 'EBADNAME', details: { field: 'node id' } }, path)
  }
  for (const path of ['/v1/images/../manifest', '/v1/images/a%2Fb/x/y', '/v1/images/']) {
    t.match(refusal('GET', path), { status: 400, code: 'EBADNAME', details: { field: 'image name' } }, path)
  }
  t.match(refusal('DELETE', '/v1/nodes/%2e%2e/boot'), { status: 400, code: 'EBADNAME' }, 'a node id is checked before the method')
  const digest = problem(() => router.route('GET', '/v1/images/by-digest/ABC/anything'))
  t.same([digest.status, digest.code, digest.message], [400, 'EBADDIGEST', 'digest "ABC" is not 64 lower-case hex digits'])
})

t.test('a malformed %-escape is 400 before anything else', async (t) => {
  const p = problem(() => parseTarget('/v1/nodes/bad%zz/boot'))
  t.same([p.status, p.code, p.message], [400, 'EBADPATH', 'path "/v1/nodes/bad%zz/boot" has a malformed %-escape'])
  t.same(parseTarget('/v1/nodes/a%3Ab?x=1').segments, ['v1', 'nodes', 'a:b'], 'segments are decoded, the query left out')
})

t.test('a literal segment wins over a parameter; ** matches any rest, * one segment', async (t) => {
  const r = new Router({
    params: { id: (v) => v.toUpperCase() },
    guards: [{ path: '/v1/locked/**', methods: ['GET'] }],
    routes: [
      { name: 'special', methods: ['GET'], path: '/v1/x/special', handler: 1 },
      { name: 'by-id', methods: ['GET'], path: '/v1/x/:id', handler: 2 },
      { name: 'any', methods: ['GET', 'PUT'], path: '/v1/y/*', handler: 3 },
    ],
  })
  t.equal(r.route('GET', '/v1/x/special').route.handler, 1)
  t.same(r.route('GET', '/v1/x/other').params, { id: 'OTHER' }, 'the check may normalise')
  t.equal(r.route('PUT', '/v1/y/z').route.handler, 3)
  t.equal(problem(() => r.route('GET', '/v1/y/z/w')).status, 404)
  t.equal(problem(() => r.route('POST', '/v1/locked')).status, 405, '** matches no segment too')
  t.equal(problem(() => r.route('POST', '/v1/locked/a/b')).status, 405)
  t.throws(() => new Router({ params: {}, guards: [], routes: [{ name: 'n', methods: ['GET'], path: '/v1/:unchecked', handler: 0 }] }), /:unchecked has no check/)
})

t.test('a path starting with // is a path, not a host: 404 or 400, never a crash (found by the HTTP fuzz campaign, #22)', async (t) => {
  t.match(problem(() => parseTarget('//%00/?x')), { status: 404, code: 'ENOTFOUND', message: 'no such endpoint //%00/ (this server speaks /v1)' })
  t.match(problem(() => parseTarget('//v1/nodes/n1/boot')), { status: 404, code: 'ENOTFOUND' }, 'not read as host "v1"')
  t.match(problem(() => parseTarget('///')), { status: 404, code: 'ENOTFOUND' })
  t.same(parseTarget('/v1/nodes/n1/boot?arch=x86_64').query.get('arch'), 'x86_64', 'the query is still read')
})
