import t from 'tap'
import { BootAgentError } from '../../agent/core/errors.js'
import { HTTP_PROBLEM_CODES, HttpProblem, isHttpProblemCode, parseJsonBody } from '../../agent/head/http-util.js'

t.test('an HttpProblem is a BootAgentError with a stable code, a status, its details as context, and headers', async (t) => {
  const p = new HttpProblem(429, 'ERATE', 'slow down', { details: { retryAfterSeconds: 3 }, headers: { 'retry-after': '3' } })
  t.ok(p instanceof BootAgentError)
  t.same([p.name, p.code, p.status, p.message, p.details, p.context, p.headers], ['HttpProblem', 'ERATE', 429, 'slow down', { retryAfterSeconds: 3 }, { retryAfterSeconds: 3 }, { 'retry-after': '3' }])
  p.withContext({ more: 1 })
  t.same(p.details, { retryAfterSeconds: 3, more: 1 }, 'context added by a layer reaches the body')
  t.same(new HttpProblem(404, 'ENOTFOUND', 'no').details, {})
})

t.test('the head answers with a closed set of codes', async (t) => {
  t.ok(HTTP_PROBLEM_CODES.every((c) => /^E[A-Z]+$/.test(c)))
  t.ok(isHttpProblemCode('ENONODE'))
  t.notOk(isHttpProblemCode('EUNEXPECTED'))
})

t.test('a body that is empty or not JSON is 400 EBADJSON saying which', async (t) => {
  t.same(parseJsonBody(Buffer.from('{"a":1}')), { a: 1 })
  t.throws(() => parseJsonBody(Buffer.alloc(0)), { status: 400, code: 'EBADJSON', message: 'request body is empty; expected JSON' })
  t.throws(() => parseJsonBody(Buffer.from('{')), { status: 400, code: 'EBADJSON', message: /^request body is not valid JSON: / })
})
