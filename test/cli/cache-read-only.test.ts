/**
 * A cache on a file system mounted read-only (a real read-only bind mount),
 * through the real bundle: `cache gc` printed "0 object(s) removed" and exit 0
 * (the refused lock was taken for "someone is writing it"), and `fetch` of an
 * image already cached was EUNEXPECTED "EROFS" on a lock file.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { gate } from '../helpers/capability.js'
import { imageBytes, publishBytes } from '../helpers/head-fixtures.js'
import { runCliAsync } from '../helpers/run-cli.js'

t.test('gc and fetch on a read-only cache fail naming the cache and what to do', gate('root'), async (t) => {
  // Not t.testdir(): tap removes that before teardowns run, the bind mount still on it.
  const dir = await mkdtemp(join(tmpdir(), 'ba-ro-cache-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const store = join(dir, 'store')
  await mkdir(store)
  await publishBytes(store, 'img', imageBytes(200_000, 3), { dir })
  const head = await startHead({ store, nodes: { schema: 1, defaults: {}, architectures: {}, groups: {}, nodes: {}, images: {} } })
  t.teardown(() => head.close())
  const url = `${head.url}/v1/images/img/manifest`
  const cache = join(dir, 'cache')
  const fetched = await runCliAsync(['fetch', url, '--cache', cache])
  t.equal(fetched.status, 0, fetched.stderr)
  const ro = join(dir, 'ro')
  await mkdir(ro)
  execFileSync('mount', ['--bind', cache, ro])
  t.teardown(() => execFileSync('umount', [ro]))
  execFileSync('mount', ['-o', 'remount,ro,bind', ro])
  const gc = await runCliAsync(['cache', 'gc', '--cache', ro, '--keep', '0'])
  t.equal(gc.status, 1, 'gc: exit 1, not "0 removed"')
  t.match(gc.stderr, new RegExp(`cache ${ro} is on a read-only file system`))
  const again = await runCliAsync(['fetch', url, '--cache', ro])
  t.equal(again.status, 1)
  t.match(again.stderr, /ECACHE|is on a read-only file system/)
  t.notMatch(again.stderr, /EUNEXPECTED/)
})
