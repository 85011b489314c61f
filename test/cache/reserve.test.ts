/**
 * The one call for space (Cache.reserve, agent/cache/space.ts): the eviction
 * policy lives in the cache. A writer asks for bytes (or says the file
 * system refused a write); the cache evicts least recently used objects,
 * never pinned ones, or refuses with CacheFullError. Real cache
 * directories; the free-space figure is scripted (the one thing this
 * machine's disk cannot be made to say on demand; cache-full.test.ts uses
 * a real full tmpfs).
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { MAX_WRITE_REFUSALS, reserveSpace } from '../../agent/cache/space.js'
import { Cache } from '../../agent/cache/store.js'
import { CacheFullError } from '../../agent/core/errors.js'
import { publishBytes } from '../helpers/cache.js'
import { seededBytes } from '../helpers/image.js'

const KiB = 1024

const put = async (cache: Cache, name: string, lastUsedAt: string) => (await publishBytes(cache, seededBytes(100 * KiB, name), { name, lastUsedAt })).m.sha256

/** A cache with objects a (oldest), b, c (newest), whose free space grows by 100 KiB per object removed. */
const setup = async (t: Test, freeAtStart: number) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const a = await put(cache, 'a', '2026-01-01T00:00:00Z')
  const b = await put(cache, 'b', '2026-01-02T00:00:00Z')
  const c = await put(cache, 'c', '2026-01-03T00:00:00Z')
  let removed = 0
  const remove = cache.remove.bind(cache)
  cache.remove = async (sha) => {
    removed++
    return remove(sha)
  }
  cache.freeBytes = async () => freeAtStart + removed * 100 * KiB
  const names = async () => (await cache.list()).objects.map((o) => o.meta.names[0]).sort()
  return { cache, a, b, c, names }
}

t.test('enough free space: nothing is evicted', async (t) => {
  const { cache, names } = await setup(t, 1000 * KiB)
  t.same(await cache.reserve(500 * KiB), [])
  t.same(await names(), ['a', 'b', 'c'])
})

t.test('too little: the least recently used go first, until the bytes fit', async (t) => {
  const { cache, names } = await setup(t, 50 * KiB)
  const freed = await cache.reserve(200 * KiB)
  t.same(freed.map((o) => o.meta.names[0]), ['a', 'b'], 'oldest first, and no more than needed')
  t.same(await names(), ['c'])
})

t.test('pinned objects are never evicted: when only they could make room, CacheFullError', async (t) => {
  const { cache, a, b, c, names } = await setup(t, 50 * KiB)
  const e = await cache.reserve(200 * KiB, { pinned: [a, b, c] }).catch((x: unknown) => x)
  t.type(e, CacheFullError)
  t.match(e, { code: 'ECACHEFULL', needed: 200 * KiB, available: 50 * KiB })
  t.same(await names(), ['a', 'b', 'c'], 'all kept')
  const partly = await cache.reserve(150 * KiB, { pinned: [a] })
  t.same(partly.map((o) => o.meta.names[0]), ['b'], 'the oldest unpinned went instead')
})

t.test('a refused write: objects go for the bytes asked whatever the free count says, then CacheFullError', async (t) => {
  const { cache, a, names } = await setup(t, 10 ** 12)
  const freed = await cache.reserve(150 * KiB, { pinned: [a], refusedWrite: { attempt: 1, bytesLeft: 4096 } })
  t.same(freed.map((o) => o.meta.names[0]), ['b', 'c'], 'evicted though the file system claims room')
  t.same(await names(), ['a'])
  await t.rejects(cache.reserve(150 * KiB, { pinned: [a], refusedWrite: { attempt: 2, bytesLeft: 4096 } }), { code: 'ECACHEFULL', needed: 150 * KiB }, 'nothing left to evict')
  await t.rejects(
    cache.reserve(150 * KiB, { refusedWrite: { attempt: MAX_WRITE_REFUSALS + 1, bytesLeft: 4096 } }),
    { code: 'ECACHEFULL', needed: 4096 },
    `refused ${MAX_WRITE_REFUSALS + 1} times in a row: full, and the unwritten bytes are what was needed`,
  )
  t.same(await names(), ['a'], 'the last refusal evicted nothing more')
})

t.test('reserveSpace asks the cache it is given (its free count and its eviction), nothing else', async (t) => {
  const asked: string[] = []
  const fake = {
    dir: '/nowhere',
    freeBytes: async () => (asked.push('free'), 10),
    evict: async () => (asked.push('evict'), []),
  } as unknown as Cache
  await t.rejects(reserveSpace(fake, 100), { code: 'ECACHEFULL', needed: 100, available: 10 })
  t.same(asked, ['free', 'evict', 'free'])
})
