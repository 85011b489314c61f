import t from 'tap'
import { checkBearer, sameToken } from '../../agent/head/auth.js'

t.test('only "Bearer <the token>" passes; anything else is 401 with WWW-Authenticate', async (t) => {
  t.doesNotThrow(() => checkBearer('Bearer s3cret', 's3cret'))
  t.doesNotThrow(() => checkBearer('bearer   s3cret', 's3cret'), 'the scheme is case-insensitive')
  for (const header of [undefined, '', 'Bearer', 'Bearer nope', 'Basic s3cret', 'Bearer s3cret extra']) {
    t.throws(() => checkBearer(header, 's3cret'), { status: 401, code: 'EAUTH', headers: { 'www-authenticate': 'Bearer realm="boot-agent"' } }, String(header))
  }
  t.ok(sameToken('a', 'a'))
  t.notOk(sameToken('a', 'a-much-longer-token'), 'lengths may differ')
})
