/**
 * How much of the cache the objects use, from the directory alone (no
 * network, no hashing): objects, bytes, corrupt-marked objects, and the
 * filesystem's size and free space.
 */
import { statfs } from 'node:fs/promises'
import { walkObjects } from '../cache/walk.js'
import { readObjectMeta } from './object-meta.js'

export interface CacheUsage {
  dir: string
  objects: number
  bytes: number
  /** Objects whose meta lists corrupt chunks (waiting for repair). */
  corruptObjects: number
  fsBytes?: number
  fsFreeBytes?: number
}

/** Bound on the objects looked at (a cache holds a handful of images). */
const MAX_OBJECTS = 10_000

export const cacheUsage = async (dir: string): Promise<CacheUsage> => {
  const out: CacheUsage = { dir, objects: 0, bytes: 0, corruptObjects: 0 }
  // The cache's own walk (lstat: a symlink or anything foreign in objects/ is a
  // problem there, never an object), so status and `cache ls` count the same.
  const entries = await walkObjects(dir).catch(() => [])
  for (const e of entries) {
    if (e.kind !== 'object') continue
    if (out.objects >= MAX_OBJECTS) break
    out.objects++
    out.bytes += e.size
    const meta = await readObjectMeta(e.path).catch(() => undefined)
    if (meta?.corruptChunks.length) out.corruptObjects++
  }
  try {
    const s = await statfs(dir)
    out.fsBytes = s.blocks * s.bsize
    out.fsFreeBytes = s.bavail * s.bsize
  } catch {
    /* no such dir: usage only */
  }
  return out
}
