import t from 'tap'
import { type FileHandle, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { appendDurable, DURABLE_FILE_MODE, fsyncPath, writeAll, writeFileDurable } from '../../agent/core/durable.js'
import { gate } from '../helpers/capability.js'
import { PAGE_BYTES, tinyFs } from '../helpers/tiny-fs.js'

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

/** A FileHandle whose write(2) writes at most `max` bytes a call (0 = none, no error), into `out` at the position asked. */
const shortWriter = (max: number, out: number[] = []): { fh: FileHandle; out: number[]; calls: () => number } => {
  let calls = 0
  let pos = 0
  const fh = {
    write: async (buf: Uint8Array, off: number, len: number, position: number | null) => {
      calls++
      const n = Math.min(max, len)
      const at = position ?? pos
      for (let i = 0; i < n; i++) out[at + i] = buf[off + i] as number
      pos = at + n
      return { bytesWritten: n, buffer: buf }
    },
  } as unknown as FileHandle
  return { fh, out, calls: () => calls }
}

t.test('writeAll writes every byte through short writes, at a position or the handle\'s own', async (t) => {
  const w = shortWriter(3)
  t.equal(await writeAll(w.fh, 'hello, world'), 12)
  t.equal(Buffer.from(w.out).toString(), 'hello, world', 'all bytes, in order')
  t.equal(w.calls(), 4, 'looped on the short counts')
  const p = shortWriter(5, [...Buffer.from('..........')])
  await writeAll(p.fh, new Uint8Array([65, 66, 67, 68, 69, 70, 71]), 2)
  t.equal(Buffer.from(p.out).toString(), '..ABCDEFG.', 'positional writes go on from where the last one ended')
  await t.rejects(writeAll(shortWriter(0).fh, 'x'), { code: 'EIO' }, 'a write that makes no progress is an error, not a hang or a silent stop')
  t.equal(await writeAll(shortWriter(0).fh, ''), 0, 'nothing to write is no write')
})

t.test('appendDurable appends whole lines, creates the file with its mode, and cuts a torn or unacknowledged tail first', async (t) => {
  const dir = t.testdir({ torn: 'one\ntwo\nthr' })
  const path = join(dir, 'log')
  t.match(await appendDurable(path, 'a\n', { mode: 0o640 }), { start: 0, end: 2, cut: 0, created: true })
  t.equal((await stat(path)).mode & 0o777, 0o640)
  t.match(await appendDurable(path, 'b\n', { end: 2 }), { start: 2, end: 4, cut: 0, created: false })
  await writeFile(path, 'half a li', { flag: 'a' })
  t.match(await appendDurable(path, 'c\n', { end: 4 }), { start: 4, end: 6, cut: 9 }, 'bytes past the acknowledged end are cut first')
  t.equal(await readFile(path, 'utf8'), 'a\nb\nc\n')
  t.match(await appendDurable(join(dir, 'torn'), 'four\n', { lines: true }), { start: 8, cut: 3 }, 'a torn last line is cut first')
  t.equal(await readFile(join(dir, 'torn'), 'utf8'), 'one\ntwo\nfour\n')
  const long = join(dir, 'long')
  await writeFile(long, 'x\n' + 'y'.repeat(200_000))
  t.match(await appendDurable(long, 'z\n', { lines: true }), { start: 2, cut: 200_000 }, 'the last newline is found however far back')
  t.equal(await readFile(long, 'utf8'), 'x\nz\n')
})

t.test('appendDurable on a full file system: the error, and nothing of the append left behind', gate('root'), async (t) => {
  const fs = await tinyFs(t, 64 * 1024)
  const path = join(fs.dir, 'log')
  await appendDurable(path, 'first\n')
  await fs.fill(PAGE_BYTES)
  const big = 'x'.repeat(3 * PAGE_BYTES) + '\n'
  await t.rejects(appendDurable(path, big), { code: 'ENOSPC' })
  t.equal(await readFile(path, 'utf8'), 'first\n', 'cut back: the bytes that did fit are gone too')
  t.match(await appendDurable(path, 'second\n'), { start: 6, cut: 0 }, 'the next append starts on a clean line')
  await t.rejects(appendDurable(join(fs.dir, 'new'), big), { code: 'ENOSPC' })
  t.equal(await readFile(join(fs.dir, 'new'), 'utf8'), '', 'a new file is left empty')
  await fs.free()
  await appendDurable(path, big)
  t.equal(await readFile(path, 'utf8'), 'first\nsecond\n' + big)
})
