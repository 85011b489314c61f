/**
 * Chunk donors (agent/cache/donors.ts): which cached objects can give a
 * download the chunks it needs, on a real cache directory.
 */
import t from 'tap'
import { join } from 'node:path'
import { findChunkSources } from '../../agent/cache/donors.js'
import { Cache } from '../../agent/cache/store.js'
import type { Chunk } from '../../agent/manifest/types.js'
import { publishBytes } from '../helpers/cache.js'
import { seededBytes, sha256Hex } from '../helpers/image.js'

const KiB = 1024

t.test('donors: the most recently used object first, never the object itself, never a chunk recorded corrupt', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const shared = seededBytes(64 * KiB, 'shared')
  const put = async (tail: string, lastUsedAt: string) => {
    const data = Buffer.concat([shared, seededBytes(64 * KiB, tail)])
    const chunks: Chunk[] = [0, 1].map((i) => ({ index: i, offset: i * 64 * KiB, size: 64 * KiB, sha256: sha256Hex(data.subarray(i * 64 * KiB, (i + 1) * 64 * KiB)) }))
    return publishBytes(cache, data, { chunks, lastUsedAt })
  }
  const old = await put('old', '2026-01-01T00:00:00Z')
  const recent = await put('recent', '2026-02-01T00:00:00Z')
  const sharedSha = old.m.chunks[0]!.sha256
  const wanted = new Set([sharedSha, old.m.chunks[1]!.sha256, 'f'.repeat(64)])

  const found = await findChunkSources(cache, wanted, 'e'.repeat(64))
  t.same(found.get(sharedSha), { path: recent.path, offset: 0, size: 64 * KiB, object: recent.m.sha256 }, 'the recent object gives the shared chunk')
  t.same(found.get(old.m.chunks[1]!.sha256)?.object, old.m.sha256, 'a chunk only the old one has comes from it')
  t.notOk(found.has('f'.repeat(64)), 'a chunk nobody has is not offered')

  t.equal((await findChunkSources(cache, wanted, recent.m.sha256)).get(sharedSha)?.object, old.m.sha256, 'the object being written is not its own donor')
  await cache.markCorrupt(recent.m.sha256, [0])
  t.equal((await findChunkSources(cache, wanted, 'e'.repeat(64))).get(sharedSha)?.object, old.m.sha256, 'a chunk recorded corrupt is not offered')
  t.same(await findChunkSources(cache, new Set(), 'e'.repeat(64)), new Map(), 'nothing wanted: nothing listed')
})
