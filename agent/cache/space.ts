/**
 * Room on the cache's file system: how much is free, eviction carried out
 * (the choice of victims is evict.ts's pure decision), and the one call a
 * writer makes for space, {@link reserveSpace}. The eviction policy lives
 * here only: a writer says how many bytes it needs (or that the file
 * system refused a write) and gets room or CacheFullError.
 */
import { lstat, statfs } from 'node:fs/promises'
import { BootAgentError, CacheFullError, isErrno } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { planEviction, type EvictionGoal } from './evict.js'
import { mountedObjects, pinReason } from './pin.js'
import { lockPath } from './layout.js'
import type { Lock, LockOptions } from '../core/lock.js'
import type { CachedObject, CacheProblem } from './walk.js'

/**
 * Refusals (ENOSPC/EDQUOT) of one write answered by evicting and writing
 * again; the next refusal is CacheFullError. Free space can look fine and
 * still be refused (quota, reserved blocks, another writer), so a few
 * rounds, not one, and not forever.
 */
export const MAX_WRITE_REFUSALS = 3

/** What space needs from the cache (the Cache class; an interface so this file does not import store.ts). */
export interface SpaceCache {
  readonly dir: string
  readonly log: Logger
  freeBytes(): Promise<number>
  list(): Promise<{ objects: CachedObject[]; problems: CacheProblem[] }>
  lock(sha: string, opts?: LockOptions): Promise<Lock>
  remove(sha: string): Promise<void>
  evict(goal: EvictionGoal): Promise<CachedObject[]>
}

export interface ReserveOptions {
  /** Objects never evicted (the one being written, the image booted before). */
  pinned?: readonly string[]
  /**
   * The file system refused a write (ENOSPC/EDQUOT), the `attempt`-th time
   * for this write, with `bytesLeft` of it unwritten. Its free count is not
   * trusted then: objects are evicted for the whole `bytes` asked, and
   * CacheFullError comes when nothing could go or after
   * {@link MAX_WRITE_REFUSALS} rounds.
   */
  refusedWrite?: { attempt: number; bytesLeft: number }
}

/** Bytes available to us on the file system holding `dir`. */
export const freeBytesAt = async (dir: string): Promise<number> => {
  const s = await statfs(dir)
  return s.bavail * s.bsize
}

/**
 * Makes room for `bytes` more bytes: evicts least-recently-used objects
 * (never pinned ones) while the free space falls short; returns the objects
 * evicted, or throws CacheFullError saying what was needed and what is free.
 */
export const reserveSpace = async (cache: SpaceCache, bytes: number, opts: ReserveOptions = {}): Promise<CachedObject[]> => {
  const pinned = opts.pinned ?? []
  const refused = opts.refusedWrite
  if (refused) {
    if (refused.attempt > MAX_WRITE_REFUSALS) throw new CacheFullError({ needed: refused.bytesLeft, available: await cache.freeBytes(), dir: cache.dir })
    const freed = await cache.evict({ needBytes: bytes, pinned })
    if (freed.length === 0) throw new CacheFullError({ needed: bytes, available: await cache.freeBytes(), dir: cache.dir })
    return freed
  }
  const free = await cache.freeBytes()
  if (free >= bytes) return []
  const freed = await cache.evict({ needBytes: bytes - free, pinned })
  const after = await cache.freeBytes()
  if (after < bytes) throw new CacheFullError({ needed: bytes, available: after, dir: cache.dir })
  return freed
}

/**
 * Removes least-recently-used objects (never pinned ones, never one
 * another process is writing, never one mounted under a running root:
 * pin.ts) until the goal is met. Returns what was removed.
 */
export const evictObjects = async (cache: SpaceCache, goal: EvictionGoal): Promise<CachedObject[]> => {
  const { objects } = await cache.list()
  const mounted = await mountedObjects(objects)
  for (const [sha, loops] of mounted) cache.log.info({ sha256: sha, loops: loops.map((l) => l.device) }, `cache: not evicting ${sha}: ${pinReason(loops)}`)
  const plan = planEviction(
    objects.map((o) => ({ sha256: o.sha256, size: o.meta.size, lastUsedAt: Date.parse(o.meta.lastUsedAt) })),
    { ...goal, pinned: [...(goal.pinned ?? []), ...mounted.keys()] },
  )
  const removed: CachedObject[] = []
  for (const victim of plan) {
    let lock: Lock | undefined
    try {
      lock = await cache.lock(victim.sha256, { timeoutMs: 0 })
    } catch (e) {
      // A full file system cannot even take a lock file. Then remove the
      // object only if nobody holds its lock (no lock file at all).
      if (e instanceof BootAgentError && e.code === 'ELOCKED') continue // being written by someone: not ours to remove now
      if (!isErrno(e, 'ENOSPC', 'EDQUOT')) throw e // a read-only cache, or a failing disk: not "nothing to remove"
      if (await lstat(lockPath(cache.dir, victim.sha256)).then(() => true, () => false)) continue
    }
    try {
      await cache.remove(victim.sha256)
      const o = objects.find((x) => x.sha256 === victim.sha256)
      if (o) removed.push(o)
      cache.log.info({ sha256: victim.sha256, size: victim.size, lastUsedAt: new Date(victim.lastUsedAt).toISOString() }, 'cache: evicted object')
    } finally {
      await lock?.release()
    }
  }
  return removed
}
