import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import type { Cache } from '../../agent/cache/store.js'
import { silentLogger } from '../../agent/core/log.js'
import { xxh64Segments } from '../../agent/hash/segments.js'
import { publishBytes } from '../helpers/cache.js'

const open = async (t: Test): Promise<Cache> => cachePipeline.openCache(t.testdir(), silentLogger())

const ago = (minutes: number): string => new Date(Date.now() - minutes * 60_000).toISOString()

t.teardown(() => cachePipeline.release?.())

t.test('contents: whether the image is there, the most recently used other object as previous, the rest evictable', async (t) => {
  const cache = await open(t)
  const wanted = await publishBytes(cache, randomBytes(10_000), { lastUsedAt: ago(1) })
  const recent = await publishBytes(cache, randomBytes(20_000), { lastUsedAt: ago(5) })
  await publishBytes(cache, randomBytes(30_000), { lastUsedAt: ago(50) })
  await publishBytes(cache, randomBytes(40_000), { lastUsedAt: ago(20) })
  t.same(await cachePipeline.contents(cache, wanted.m.sha256), { hasImage: true, evictableBytes: 70_000, previous: recent.m.sha256 })
  const absent = 'f'.repeat(64)
  t.same(await cachePipeline.contents(cache, absent), { hasImage: false, evictableBytes: 90_000, previous: wanted.m.sha256 }, 'for another image, all but the newest are evictable')
})

t.test('contents of an empty cache: no image, no previous, nothing to evict', async (t) => {
  const cache = await open(t)
  t.same(await cachePipeline.contents(cache, 'a'.repeat(64)), { hasImage: false, evictableBytes: 0 })
})

t.test('a symlink where the object should be is not the image', async (t) => {
  const cache = await open(t)
  const sha = 'b'.repeat(64)
  const dir = t.testdir()
  await writeFile(join(dir, 'elsewhere'), 'x')
  await mkdir(dirname(cache.objectPath(sha)), { recursive: true })
  await symlink(join(dir, 'elsewhere'), cache.objectPath(sha))
  t.equal((await cachePipeline.contents(cache, sha)).hasImage, false)
  t.equal(await cachePipeline.startFastDigest!(cache, sha, new AbortController().signal), undefined, 'a symlink is never followed to be hashed')
})

t.test('the fast digest of a cached image is its segment digests, started early; none for an absent image', async (t) => {
  const cache = await open(t)
  const data = randomBytes(3_000_000)
  const { m, path } = await publishBytes(cache, data)
  const started = await cachePipeline.startFastDigest!(cache, m.sha256, new AbortController().signal)
  t.ok(started)
  const digest = await started!.digest
  t.equal(digest.size, data.length)
  t.same(digest.xxh64, (await xxh64Segments(path)).xxh64)
  t.equal(await cachePipeline.startFastDigest!(cache, 'c'.repeat(64), new AbortController().signal), undefined)
})

t.test('clear removes every object and everything in the cache\'s tmp dir', async (t) => {
  const cache = await open(t)
  await publishBytes(cache, randomBytes(5_000))
  await publishBytes(cache, randomBytes(6_000))
  await mkdir(join(cache.tmpDir, 'half-done'), { recursive: true })
  await writeFile(join(cache.tmpDir, 'half-done', 'part'), 'x')
  await writeFile(join(cache.tmpDir, 'loose.part'), 'y')
  await cachePipeline.clear(cache)
  t.same((await cache.list()).objects, [])
  t.same(await readdir(cache.tmpDir), [])
})
