/**
 * The one walk over `objects/sha256/` (layout.ts). Everything the cache
 * lists is found here: the object files (for a caller that hashes them
 * before their metadata is read), every object with its metadata, and what
 * does not belong there (a symlink, a foreign file, metadata without an
 * object), which is reported and never followed.
 */
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { isErrno } from '../core/errors.js'
import { META_SUFFIX, SHA256_HEX, objectsRoot } from './layout.js'
import type { ObjectMeta } from './meta.js'

/** Something on the cache disk that is not what the cache wrote; ignored, never followed. */
export interface CacheProblem {
  path: string
  problem: string
}

export interface CachedObject {
  sha256: string
  path: string
  meta: ObjectMeta
}

/** What the walk met in objects/, in directory order (shards and names sorted). */
export type ObjectsEntry =
  /** A regular file named as an object; `hasMeta`: a metadata file of its name is next to it. */
  | { kind: 'object'; sha256: string; path: string; size: number; hasMeta: boolean }
  | { kind: 'problem'; path: string; problem: string }

/** Walks objects/ once (lstat only: nothing is followed, nothing read). A missing objects/ is empty. */
export const walkObjects = async (dir: string): Promise<ObjectsEntry[]> => {
  const root = objectsRoot(dir)
  const out: ObjectsEntry[] = []
  let shards: string[]
  try {
    shards = (await readdir(root)).sort()
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENOTDIR')) return out
    throw e
  }
  for (const shard of shards) {
    const sp = join(root, shard)
    const st = await lstat(sp)
    if (!/^[0-9a-f]{2}$/.test(shard) || !st.isDirectory()) {
      out.push({ kind: 'problem', path: sp, problem: st.isSymbolicLink() ? 'symlink in objects/ (not followed)' : 'foreign entry in objects/' })
      continue
    }
    const names = (await readdir(sp)).sort()
    const seen = new Set(names)
    for (const name of names) {
      const p = join(sp, name)
      const isMeta = name.endsWith(META_SUFFIX)
      const base = isMeta ? name.slice(0, -META_SUFFIX.length) : name
      const sha = shard + base
      if (!SHA256_HEX.test(sha) || name.startsWith('.')) {
        // Our own atomic writes' temp files (.name.tmp) are not foreign.
        if (!name.startsWith('.') || !name.endsWith('.tmp')) out.push({ kind: 'problem', path: p, problem: 'foreign file' })
        continue
      }
      if (isMeta) {
        if (!seen.has(base)) out.push({ kind: 'problem', path: p, problem: 'metadata without an object' })
        continue
      }
      const ost = await lstat(p)
      if (!ost.isFile()) {
        out.push({ kind: 'problem', path: p, problem: ost.isSymbolicLink() ? 'object is a symlink (not followed)' : 'object is not a regular file' })
        continue
      }
      out.push({ kind: 'object', sha256: sha, path: p, size: ost.size, hasMeta: seen.has(name + META_SUFFIX) })
    }
  }
  return out
}

/** What listing needs from the cache: its directory, its metadata reader and its problem report. */
export interface ListingCache {
  readonly dir: string
  readMeta(sha: string): Promise<ObjectMeta | undefined>
  report(path: string, problem: string): void
}

/** Every object with valid metadata, and the problems met on the way (each also reported to the cache). */
export const listObjects = async (cache: ListingCache): Promise<{ objects: CachedObject[]; problems: CacheProblem[] }> => {
  const problems: CacheProblem[] = []
  const objects: CachedObject[] = []
  const note = (path: string, problem: string) => {
    problems.push({ path, problem })
    cache.report(path, problem)
  }
  for (const e of await walkObjects(cache.dir)) {
    if (e.kind === 'problem') {
      note(e.path, e.problem)
      continue
    }
    const meta = await cache.readMeta(e.sha256)
    if (!meta) {
      note(e.path, e.hasMeta ? 'object with malformed metadata' : 'object without metadata')
      continue
    }
    if (e.size !== meta.size) note(e.path, `size ${e.size}, metadata says ${meta.size}`)
    objects.push({ sha256: e.sha256, path: e.path, meta })
  }
  return { objects, problems }
}
