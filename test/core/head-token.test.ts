/**
 * agent/core/head-token.ts: the node's token file is used only when it is a
 * root-only regular file (a readable one is refused, naming the path and the
 * fix, never the token), and the token goes only to the head's own origin.
 */
import t from 'tap'
import { chmod, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { authHeaders, headBearer, readTokenFile } from '../../agent/core/head-token.js'

const TOKEN = 'b7f3c0de9a1e4d2c8f6b5a4e3d2c1b0a'

t.test('a root-only token file is read: its first line, trimmed', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'token')
  await writeFile(path, `  ${TOKEN}  \nanything after the first line\n`, { mode: 0o600 })
  t.equal(await readTokenFile(path, { key: 'token file' }), TOKEN)
  t.equal(await readTokenFile(join(dir, 'absent'), { key: 'token file', optional: true }), undefined, 'optional and absent: no token')
  await t.rejects(readTokenFile(join(dir, 'absent'), { key: '--token-file' }), { code: 'ECONFIG', key: '--token-file' }, 'given and absent: refused')
})

t.test('a group- or world-readable (or writable) token file is refused, naming the path and the fix, never the token', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'token')
  await writeFile(path, `${TOKEN}\n`)
  for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602]) {
    await chmod(path, mode)
    const e = await readTokenFile(path, { key: 'token file' }).then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    )
    t.equal(e?.code, 'ECONFIG', `mode ${mode.toString(8)} refused`)
    t.match(e?.message, new RegExp(`${path}.*mode 0${mode.toString(8)}.*chmod 600 ${path}`))
    t.notOk(e?.message.includes(TOKEN) || JSON.stringify(e).includes(TOKEN), 'the token is not in the error')
  }
  const link = join(dir, 'link')
  await chmod(path, 0o600)
  await symlink(path, link)
  await t.rejects(readTokenFile(link, { key: 'token file' }), { code: 'ECONFIG', message: /symbolic link/ })
  await writeFile(path, '\n', { mode: 0o600 })
  await t.rejects(readTokenFile(path, { key: 'token file' }), { message: /holds no token/ })
  await writeFile(path, 'two words\n', { mode: 0o600 })
  await t.rejects(readTokenFile(path, { key: 'token file' }), { message: /^(?!.*two words).*visible ASCII/ })
})

t.test('the token goes to the head\'s own origin only: never to a mirror or another port', async (t) => {
  const bearer = headBearer('http://10.0.0.1:8080', TOKEN)
  t.same(authHeaders('http://10.0.0.1:8080/v1/images/by-digest/x/image', bearer), { authorization: `Bearer ${TOKEN}` })
  t.same(authHeaders('http://10.0.0.2:8080/v1/images/by-digest/x/image', bearer), {}, 'a mirror')
  t.same(authHeaders('http://10.0.0.1:8081/x', bearer), {}, 'another port')
  t.same(authHeaders('https://10.0.0.1:8080/x', bearer), {}, 'another scheme')
  t.same(authHeaders('not a url', bearer), {})
  t.same(authHeaders('http://10.0.0.1:8080/x', headBearer('http://10.0.0.1:8080', undefined)), {}, 'no token: no header')
})
