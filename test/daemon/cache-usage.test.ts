import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { cacheUsage } from '../../agent/daemon/cache-usage.js'
import { publishBytes } from '../helpers/cache.js'

t.test('objects and their bytes are counted from the directory, corrupt-marked ones apart, with the file system\'s size', async (t) => {
  const dir = t.testdir()
  const cache = await Cache.open(dir)
  const a = await publishBytes(cache, randomBytes(100_000))
  await publishBytes(cache, randomBytes(50_000))
  await cache.markCorrupt(a.m.sha256, [0])
  const u = await cacheUsage(dir)
  t.match(u, { dir, objects: 2, bytes: 150_000, corruptObjects: 1 })
  t.ok(u.fsBytes! > 0 && u.fsFreeBytes! >= 0 && u.fsFreeBytes! <= u.fsBytes!)
})

t.test('what is not an object is not counted: meta files, temp files, odd names, directories', async (t) => {
  const dir = t.testdir()
  const cache = await Cache.open(dir)
  await publishBytes(cache, randomBytes(10_000))
  const shard = join(dir, 'objects', 'sha256', 'ab')
  await mkdir(shard, { recursive: true })
  await writeFile(join(shard, 'not-hex'), 'x'.repeat(1000))
  await writeFile(join(shard, 'c'.repeat(62) + '.part'), 'x'.repeat(1000))
  await mkdir(join(shard, 'd'.repeat(62)))
  await mkdir(join(dir, 'objects', 'sha256', 'zz'))
  await writeFile(join(dir, 'objects', 'sha256', 'zz', 'f'.repeat(62)), 'x')
  t.match(await cacheUsage(dir), { objects: 1, bytes: 10_000, corruptObjects: 0 })
})

t.test('a cache dir that is not there is empty usage, without the file system figures', async (t) => {
  const missing = join(t.testdir(), 'absent')
  t.same(await cacheUsage(missing), { dir: missing, objects: 0, bytes: 0, corruptObjects: 0 })
})

// cache-usage.ts once used stat, which follows links: the heartbeat counted a symlink in
// objects/ as an object, with the size of whatever it pointed at, even outside the cache,
// where the cache's own walk (cache/walk.ts, lstat) calls it a problem. It now uses that walk.
t.test('a symlink in objects/ is not counted as an object (it is not one to the cache\'s own walk)', async (t) => {
  const dir = t.testdir()
  const cache = await Cache.open(dir)
  const { path } = await publishBytes(cache, randomBytes(10_000))
  const shard = join(dir, 'objects', 'sha256', 'ab')
  await mkdir(shard, { recursive: true })
  await symlink(path, join(shard, 'e'.repeat(62)))
  t.same((await cache.list()).objects.length, 1, 'the cache itself sees one object')
  t.match(await cacheUsage(dir), { objects: 1, bytes: 10_000 })
})
