import t from 'tap'
import { stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeDir } from '../../agent/core/make-dir.js'

t.test('makes missing parents with the mode, accepts an existing directory, refuses a file', async (t) => {
  const dir = t.testdir()
  const deep = join(dir, 'a', 'b', 'c')
  await makeDir(deep, 0o700)
  t.ok((await stat(deep)).isDirectory())
  t.equal((await stat(join(dir, 'a'))).mode & 0o777, 0o700)
  await makeDir(deep, 0o700)
  await writeFile(join(dir, 'file'), 'x')
  await t.rejects(makeDir(join(dir, 'file')), { code: 'EEXIST' })
  await t.rejects(makeDir(join(dir, 'file', 'sub')), { code: 'ENOTDIR' })
})

// Node 20's recursive mkdir spins forever on these (procfs answers ENOENT, Node retries).
t.test('a path under /proc or /sys fails at once, naming it', async (t) => {
  await t.rejects(makeDir('/proc/boot-agent-x/y'), { code: 'ECONFIG', message: /cannot create directory \/proc\/boot-agent-x: its parent \/proc exists but refuses/ })
  await t.rejects(makeDir('/sys/boot-agent-x'), { code: /^(ECONFIG|ENOENT|EACCES|EPERM)$/ })
})
