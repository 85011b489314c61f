/**
 * Chunk donors: where chunks a download needs already sit in other cached
 * objects (a new image shares most of its chunks with the previous one).
 * Only candidates: the cache disk is not trusted, so the reader verifies
 * each donor chunk's sha256 as it copies it (transport/reuse.ts).
 */
import type { CachedObject, CacheProblem } from './walk.js'

/** Where one chunk can be read: `size` bytes at `offset` of the object file `path` (object `object`). */
export interface ChunkSource {
  path: string
  offset: number
  size: number
  object: string
}

/**
 * The cached objects holding chunks with the given sha256s (other than
 * `exclude`, the object being written), the most recently used first;
 * chunks an object has recorded as corrupt are never offered.
 */
export const findChunkSources = async (
  cache: { list(): Promise<{ objects: CachedObject[]; problems: CacheProblem[] }> },
  wanted: ReadonlySet<string>,
  exclude: string,
): Promise<Map<string, ChunkSource>> => {
  const found = new Map<string, ChunkSource>()
  if (wanted.size === 0) return found
  const { objects } = await cache.list()
  for (const o of objects.sort((a, b) => Date.parse(b.meta.lastUsedAt) - Date.parse(a.meta.lastUsedAt))) {
    if (o.sha256 === exclude) continue
    const corrupt = new Set(o.meta.corruptChunks ?? [])
    for (const c of o.meta.chunks) {
      if (corrupt.has(c.index) || !wanted.has(c.sha256) || found.has(c.sha256)) continue
      found.set(c.sha256, { path: o.path, offset: c.offset, size: c.size, object: o.sha256 })
    }
  }
  return found
}
