import t from 'tap'
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DURABLE_FILE_MODE, fsyncPath, writeFileDurable } from '../../agent/core/durable.js'

t.test('a durable write creates or replaces the file whole, root-only, and leaves no temp file', async (t) => {
  const dir = t.testdir({ 'state.json': 'old' })
  const path = join(dir, 'state.json')
  await writeFileDurable(path, '{"new":true}')
  t.equal(await readFile(path, 'utf8'), '{"new":true}')
  await writeFileDurable(join(dir, 'fresh.bin'), new Uint8Array([1, 2, 3]))
  t.same([...(await readFile(join(dir, 'fresh.bin')))], [1, 2, 3])
  t.equal((await stat(path)).mode & 0o777, DURABLE_FILE_MODE)
  t.equal(DURABLE_FILE_MODE, 0o600)
  await writeFileDurable(join(dir, 'shared.json'), 'x', { mode: 0o644 })
  t.equal((await stat(join(dir, 'shared.json'))).mode & 0o777, 0o644, 'a mode when asked')
  t.same((await readdir(dir)).sort(), ['fresh.bin', 'shared.json', 'state.json'])
})

t.test('a write that cannot complete keeps the old content and removes its temp file', async (t) => {
  const dir = t.testdir()
  // The target is a non-empty directory: the rename fails after the bytes were written.
  await mkdir(join(dir, 'target'))
  await writeFile(join(dir, 'target', 'inside'), 'keep')
  await t.rejects(writeFileDurable(join(dir, 'target'), 'new'), { code: /^(EISDIR|ENOTEMPTY|EEXIST)$/ })
  t.same(await readdir(dir), ['target'], 'no temp file left')
  t.equal(await readFile(join(dir, 'target', 'inside'), 'utf8'), 'keep')
  await t.rejects(writeFileDurable(join(dir, 'no-such-dir', 'f'), 'x'), { code: 'ENOENT' })
})

t.test('concurrent durable writes of one file each land whole', async (t) => {
  const path = join(t.testdir(), 'f')
  const bodies = Array.from({ length: 20 }, (_, i) => String(i).repeat(1000 + i))
  await Promise.all(bodies.map((b) => writeFileDurable(path, b)))
  t.ok(bodies.includes(await readFile(path, 'utf8')), 'one of the writes, not a mix')
})

t.test('fsyncPath syncs a directory or a file, and says when it is missing', async (t) => {
  const dir = t.testdir({ f: 'x' })
  await fsyncPath(dir)
  await fsyncPath(join(dir, 'f'))
  await t.rejects(fsyncPath(join(dir, 'missing')), { code: 'ENOENT' })
})
