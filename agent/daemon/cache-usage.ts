/**
 * How much of the cache the objects use, from the directory alone (no
 * network, no hashing): objects, bytes, corrupt-marked objects, and the
 * filesystem's size and free space.
 */
import { readdir, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
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

const HEX2 = /^[0-9a-f]{2}$/
const HEX62 = /^[0-9a-f]{62}$/
/** Bound on the objects looked at (a cache holds a handful of images). */
const MAX_OBJECTS = 10_000

export const cacheUsage = async (dir: string): Promise<CacheUsage> => {
  const out: CacheUsage = { dir, objects: 0, bytes: 0, corruptObjects: 0 }
  const root = join(dir, 'objects', 'sha256')
  const prefixes = await readdir(root).catch(() => [] as string[])
  for (const p of prefixes.filter((x) => HEX2.test(x))) {
    for (const f of (await readdir(join(root, p)).catch(() => [] as string[])).filter((x) => HEX62.test(x))) {
      if (out.objects >= MAX_OBJECTS) break
      const path = join(root, p, f)
      const st = await stat(path).catch(() => undefined)
      if (!st?.isFile()) continue
      out.objects++
      out.bytes += st.size
      const meta = await readObjectMeta(path).catch(() => undefined)
      if (meta?.corruptChunks.length) out.corruptObjects++
    }
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
