/**
 * Objects put into a real cache through the real path: bytes written as a
 * temp file in tmp/, their segment digests computed, then Cache.publish.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { xxh64Segments } from '../../agent/hash/segments.js'
import type { Cache } from '../../agent/cache/store.js'
import type { Chunk, Manifest } from '../../agent/manifest/types.js'
import { manifestFor } from './image.js'

/** Publishes `data` as an object (chunks seeded, or `chunks`); `lastUsedAt` then rewritten in its metadata when given. */
export const publishBytes = async (cache: Cache, data: Buffer, opts: { name?: string; chunks?: Chunk[]; lastUsedAt?: string } = {}): Promise<{ m: Manifest; path: string; xxh64: string[] }> => {
  const m = manifestFor(data, [], { ...(opts.name ? { name: opts.name } : {}), ...(opts.chunks ? { chunks: opts.chunks } : {}) })
  const from = join(cache.tmpDir, `${m.sha256}.publish`)
  await writeFile(from, data)
  const { xxh64 } = await xxh64Segments(from)
  const path = await cache.publish({ from, sha256: m.sha256, computedSha256: m.sha256, size: data.length, xxh64, chunks: m.chunks, ...(opts.name ? { name: opts.name } : {}) })
  if (opts.lastUsedAt) {
    const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
    await writeFile(path + '.meta.json', JSON.stringify({ ...meta, lastUsedAt: opts.lastUsedAt }))
  }
  return { m, path, xxh64 }
}
