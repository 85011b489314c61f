/**
 * Background re-verification of a cache object after squashfs errors on it
 * (SPEC §9), with the cache's own verification (agent/cache/store.ts: size +
 * xxh64 of each 64 MiB segment, then the sha256 of the chunks in segments
 * that differ):
 * the bad chunks are marked corrupt with Cache.markCorrupt, so the next fetch
 * (fetchImage) re-downloads only those, and what was found is reported.
 *
 * Throttled: one object at a time, at most once per object per
 * `minIntervalMs` (a flood of errors asks many times; one check answers), and
 * hashed on one thread (not the cache's worker pool) at idle I/O priority
 * under the unit.
 */
import type { Logger } from '../core/log.js'
import { silentLogger } from '../core/log.js'
import { messageOf } from '../core/errors.js'
import { Cache } from '../cache/store.js'
import { hashRangesInline } from '../hash/file.js'
import type { ObjectRef } from './correlate.js'

export const DEFAULT_SELF_CHECK_INTERVAL_MS = 10 * 60_000
/** Bound on the queue of objects waiting for a check. */
export const MAX_QUEUED_CHECKS = 16

export interface BadChunk {
  index: number
  offset: number
  size: number
  /** The chunk's sha256 from the chunk list (the bytes on disk hash to something else). */
  expected: string
}

export interface SelfCheckResult {
  object: ObjectRef
  /** Image name from the object's meta, when it has one. */
  name?: string
  chunksChecked: number
  bad: BadChunk[]
  /** corruptChunks in the meta after marking (all known bad chunks). */
  corruptChunks: number[]
  /** The object verified clean. */
  ok: boolean
  /** Why not, in the cache's words (xxh64 mismatch, chunks differ, no chunk list, …). */
  reason?: string
  durationMs: number
  /** Set when the object could not be checked at all. */
  error?: string
}

/**
 * What the cache's own verification says of `object` (fast: xxh64, then chunk
 * sha256s on a mismatch). Against the object's metadata, not a manifest: the
 * daemon looks for the disk going bad under a running node (corruption), and
 * has no manifest at hand. It is not what makes an object trusted: the next
 * boot checks it against the manifest the head published (docs/cache.md,
 * "What a hit is checked against").
 */
export const verifyObject = async (object: ObjectRef, opts: { log?: Logger; signal?: AbortSignal } = {}): Promise<{ cache: Cache; ok: boolean; reason?: string; bad: BadChunk[]; checked: number; name?: string }> => {
  // hashRangesInline, verifyThreads 1: one thread. A background check must not take both cores from the node's work.
  // mustExist: the object's own cache, read as it is (nothing made, no mode changed).
  const cache = await Cache.open(object.cacheDir, { mustExist: true, hasher: hashRangesInline, verifyThreads: 1, ...(opts.log ? { log: opts.log } : {}) })
  const v = await cache.verify(object.sha256, { mode: 'fast', ...(opts.signal ? { signal: opts.signal } : {}) })
  await cache.recordVerdict(object.sha256, v) // a recorded xxh64 the bytes disprove is corrected
  const byIndex = new Map((v.chunks ?? []).map((c) => [c.index, c]))
  const bad = v.badChunks.flatMap((i) => {
    const c = byIndex.get(i)
    return c ? [{ index: i, offset: c.offset, size: c.size, expected: c.sha256 }] : []
  })
  const meta = await cache.readMeta(object.sha256)
  return { cache, ok: v.ok, ...(v.reason ? { reason: v.reason } : {}), bad, checked: v.chunks?.length ?? 0, ...(meta?.names[0] ? { name: meta.names[meta.names.length - 1] } : {}) }
}

export interface SelfCheckerOptions {
  log?: Logger
  /** At most one check per object in this window. Default 10 minutes. */
  minIntervalMs?: number
  onResult: (r: SelfCheckResult) => void | Promise<void>
  now?: () => number
  signal?: AbortSignal
}

export class SelfChecker {
  private readonly opts: SelfCheckerOptions
  private readonly lastRun = new Map<string, number>()
  private readonly queue: ObjectRef[] = []
  private running: Promise<void> | undefined

  constructor(opts: SelfCheckerOptions) {
    this.opts = opts
  }

  /** Asks for a check of `object`; ignored when one ran (or is queued) within the window. */
  request(object: ObjectRef): boolean {
    const now = (this.opts.now ?? Date.now)()
    const last = this.lastRun.get(object.sha256)
    if (last !== undefined && now - last < (this.opts.minIntervalMs ?? DEFAULT_SELF_CHECK_INTERVAL_MS)) return false
    if (this.queue.length >= MAX_QUEUED_CHECKS) return false
    this.lastRun.set(object.sha256, now)
    this.queue.push(object)
    this.running ??= this.drain().finally(() => {
      this.running = undefined
    })
    return true
  }

  /** Resolves when no check is queued or running. */
  async idle(): Promise<void> {
    while (this.running) await this.running
  }

  private async drain(): Promise<void> {
    const log = this.opts.log ?? silentLogger()
    for (let o = this.queue.shift(); o; o = this.queue.shift()) {
      if (this.opts.signal?.aborted) return
      const started = performance.now()
      let result: SelfCheckResult
      try {
        const v = await verifyObject(o, { log, ...(this.opts.signal ? { signal: this.opts.signal } : {}) })
        let corrupt: number[] = []
        if (v.bad.length) {
          await v.cache.markCorrupt(o.sha256, v.bad.map((b) => b.index))
          // What the meta now says, not what we asked: a meta the cache cannot read is not marked.
          corrupt = (await v.cache.readMeta(o.sha256))?.corruptChunks ?? []
        }
        result = {
          object: o, chunksChecked: v.checked, bad: v.bad, corruptChunks: corrupt, ok: v.ok,
          ...(v.reason ? { reason: v.reason } : {}),
          ...(v.name ? { name: v.name } : {}),
          durationMs: Math.round(performance.now() - started),
        }
        log.info({ op: 'self-check', sha256: o.sha256, ok: v.ok, bad: v.bad.length, checked: v.checked, durationMs: result.durationMs }, '[finished] self-check')
      } catch (e) {
        if (this.opts.signal?.aborted) return
        result = { object: o, chunksChecked: 0, bad: [], corruptChunks: [], ok: false, durationMs: Math.round(performance.now() - started), error: messageOf(e) }
        log.error({ op: 'self-check', sha256: o.sha256, err: messageOf(e) }, '[failed] self-check')
      }
      await this.opts.onResult(result)
    }
  }
}
