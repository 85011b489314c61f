/**
 * Background re-verification of a cache object after squashfs errors on it
 * (SPEC §9): re-hash every chunk against the chunk list in the object's meta,
 * mark the bad ones corrupt (so the next fetch re-downloads only those), and
 * report what was found.
 *
 * Throttled: one object at a time, at most once per object per
 * `minIntervalMs` (a flood of errors asks many times; one check answers), and
 * an object is read sequentially with no more than one chunk in memory.
 */
import { open } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import type { Logger } from '../log.js'
import { silentLogger } from '../log.js'
import { messageOf } from '../errors.js'
import { markCorruptInMeta, readObjectMeta } from './object-meta.js'
import type { ObjectRef } from './correlate.js'

export const DEFAULT_SELF_CHECK_INTERVAL_MS = 10 * 60_000
/** Bound on the queue of objects waiting for a check. */
export const MAX_QUEUED_CHECKS = 16

export interface BadChunk {
  index: number
  offset: number
  size: number
  expected: string
  found: string
}

export interface SelfCheckResult {
  object: ObjectRef
  /** Image name from the object's meta, when it has one. */
  name?: string
  chunksChecked: number
  bad: BadChunk[]
  /** corruptChunks in the meta after marking (all known bad chunks). */
  corruptChunks: number[]
  /** The meta has no chunk list: only the whole-object digest was compared. */
  wholeObjectOnly: boolean
  wholeObjectOk?: boolean
  durationMs: number
  /** Set when the object could not be checked at all. */
  error?: string
}

/** Re-hashes `objectPath` chunk by chunk against its meta. Does not mark anything. */
export const verifyChunks = async (objectPath: string, signal?: AbortSignal): Promise<{ bad: BadChunk[]; checked: number; wholeOk?: boolean; name?: string }> => {
  const meta = await readObjectMeta(objectPath)
  const fh = await open(objectPath, 'r')
  try {
    if (meta.chunks.length === 0) {
      const h = createHash('sha256')
      for await (const b of fh.createReadStream({ autoClose: false })) {
        signal?.throwIfAborted()
        h.update(b as Buffer)
      }
      return { bad: [], checked: 0, wholeOk: h.digest('hex') === meta.sha256, ...(meta.names[0] ? { name: meta.names[0] } : {}) }
    }
    const bad: BadChunk[] = []
    let buf = Buffer.alloc(0)
    for (const c of meta.chunks) {
      signal?.throwIfAborted()
      if (buf.length < c.size) buf = Buffer.alloc(c.size)
      const { bytesRead } = await fh.read(buf, 0, c.size, c.offset)
      const found = createHash('sha256').update(buf.subarray(0, bytesRead)).digest('hex')
      if (bytesRead !== c.size || found !== c.sha256) bad.push({ index: c.index, offset: c.offset, size: c.size, expected: c.sha256, found })
    }
    return { bad, checked: meta.chunks.length, ...(meta.names[0] ? { name: meta.names[0] } : {}) }
  } finally {
    await fh.close()
  }
}

export interface SelfCheckerOptions {
  log?: Logger
  /** At most one check per object in this window. Default 10 minutes. */
  minIntervalMs?: number
  /** Marks chunks corrupt; default writes corruptChunks into the meta (Cache.markCorrupt once merged). */
  markCorrupt?: (object: ObjectRef, indexes: number[]) => Promise<number[]>
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
        const v = await verifyChunks(o.path, this.opts.signal)
        let corrupt: number[] = []
        if (v.bad.length) {
          const mark = this.opts.markCorrupt ?? ((obj, idx) => markCorruptInMeta(obj.path, idx))
          corrupt = await mark(o, v.bad.map((b) => b.index))
        }
        result = {
          object: o, chunksChecked: v.checked, bad: v.bad, corruptChunks: corrupt,
          wholeObjectOnly: v.checked === 0, ...(v.wholeOk !== undefined ? { wholeObjectOk: v.wholeOk } : {}),
          ...(v.name ? { name: v.name } : {}),
          durationMs: Math.round(performance.now() - started),
        }
        log.info({ op: 'self-check', sha256: o.sha256, bad: v.bad.length, checked: v.checked, durationMs: result.durationMs }, '[finished] self-check')
      } catch (e) {
        if (this.opts.signal?.aborted) return
        result = { object: o, chunksChecked: 0, bad: [], corruptChunks: [], wholeObjectOnly: false, durationMs: Math.round(performance.now() - started), error: messageOf(e) }
        log.error({ op: 'self-check', sha256: o.sha256, err: messageOf(e) }, '[failed] self-check')
      }
      await this.opts.onResult(result)
    }
  }
}
