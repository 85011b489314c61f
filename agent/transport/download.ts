/**
 * The download engine behind fetchImage: fills the missing chunks of a
 * partial object from local donors (delta, reuse.ts) and from the image's
 * URLs, each chunk verified (sha256) as it lands, then checks the whole
 * image's sha256. This file keeps the queue of range requests, the mirrors
 * and the retries; the other jobs have rooms of their own: receiving into
 * write buffers (chunk-writer.ts), writing to disk (disk-writer.ts), the
 * whole-image digests (digest-feed.ts), the space (the cache's `reserve`)
 * and the recorded progress (cache/partial.ts).
 *
 * One pass over the bytes: every network piece is copied once into a large
 * (shared) write buffer and written from there with large writes. The sha256
 * work runs on a worker thread (hash/download-hasher.ts) reading the same buffer: each
 * completed chunk is verified there, and fed to the whole-image sha256 when
 * it is next in order, while this thread keeps receiving; a buffer is written
 * (verified chunks only) once every chunk in it has its verdict. Only bytes
 * that were not next in order (parallel ranges, resumed or reused chunks) are
 * read back — from the page cache — to extend the whole-image digests.
 *
 * Over 400 lines: one room, the Download's scheduling — the range queue, the
 * mirror choice, the retries and the per-task receive loop share one state
 * (queue, cursor, live mirrors, first fatal error) that splitting would only
 * pass around.
 */
import { BootAgentError, CacheFullError, IntegrityError, SizeError } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import type { Chunk, Manifest } from '../manifest/types.js'
import type { PartialObject } from '../cache/partial.js'
import type { Cache } from '../cache/store.js'
import { ChunkWriter, WRITE_BUFFER_BYTES, receiveChunks, type WriterEntry, type Verdicts } from './chunk-writer.js'
import { DigestFeed } from './digest-feed.js'
import { DiskWriter, LocalIoError, local } from './disk-writer.js'
import { openBody, pieceReader, type BodyMeta } from './http.js'
import type { HeadBearer } from '../core/head-token.js'
import { directGet } from './direct-http.js'
import { planRanges, type RangeTask } from './plan.js'
import { Progress, type ProgressInfo } from './progress.js'
import { reuseChunks } from './reuse.js'
import { DEFAULT_RETRY_POLICY, isRetryable, retryDelayMs, type RetryPolicy } from '../core/retry.js'
import { sleep, type Sleep } from '../core/clock.js'
import { faultPoint } from '../core/fault.js'

/**
 * Longest single Range request. Large, because a request's end drains the
 * pipeline: the receive waits until every buffer in flight is verified and
 * written (the retry decisions need their verdicts), and the hash workers
 * and the disk then wait for the next request's first buffer. At 16 MiB
 * that was 128 drains per 2 GiB with one stream. Parallel streams split
 * the work much finer anyway ({@link rangeCap}).
 */
export const MAX_RANGE_BYTES = 1024 * 1024 * 1024
/**
 * Parallel range requests by default: one. Measured here (2 GiB from nginx on
 * loopback, 2 cores, 2026-11-21): 1 stream 5.7 s, RSS 129 MB; 2 streams 9.3 s,
 * RSS 148 MB. The bytes a stream receives ahead of the in-order cursor are
 * written with O_DIRECT, so the whole-image digests must read them back from
 * the disk, not the page cache. More streams (`--streams`) serve links where
 * one connection is capped below the disk's rate.
 */
export const DEFAULT_STREAMS = 1

/** Shortest Range request the split for parallel streams makes (a request costs a round trip and a header). */
export const MIN_STREAM_RANGE_BYTES = 256 * 1024

/**
 * The longest Range request for `needBytes` over `streams` streams: with one
 * stream the given cap; with more, about two requests per stream (so a
 * stream that finishes early finds work), never under
 * {@link MIN_STREAM_RANGE_BYTES}. Without this an image under the cap is one
 * request, and every stream but the first would idle.
 */
export const rangeCap = (needBytes: number, streams: number, maxRangeBytes: number): number =>
  streams <= 1 ? maxRangeBytes : Math.min(maxRangeBytes, Math.max(MIN_STREAM_RANGE_BYTES, Math.ceil(needBytes / (2 * streams))))

export interface DownloadOptions {
  manifest: Manifest
  cache: Cache
  partial: PartialObject
  /** Mirrors in this node's order. */
  urls: string[]
  log: Logger
  signal?: AbortSignal
  /** Objects eviction must keep (this image is always kept). */
  pin?: readonly string[]
  streams?: number
  maxRangeBytes?: number
  retry?: RetryPolicy
  random?: () => number
  /** The wait between attempts (tests record it). Default the real, abortable sleep. */
  sleep?: Sleep
  /** Copy chunks found in other cached objects instead of downloading them. */
  reuse?: boolean
  onProgress?: (p: ProgressInfo) => void
  headersTimeoutMs?: number
  idleTimeoutMs?: number
  /** This node's token for the head (sent to the head's own origin only). */
  bearer?: HeadBearer
  /** This node's id, sent with every request (`X-Boot-Agent-Node`); none when not given. */
  nodeId?: string
}

export interface DownloadResult {
  /** xxh64 (hex) of each 64 MiB segment of the image (cache/meta.ts). */
  xxh64: string[]
  sha256: string
  bytesDownloaded: number
  bytesReused: number
  requests: number
}

interface Mirror {
  url: string
  /** Gave a final (non-retryable) error: not used again in this fetch. */
  dead: boolean
  /** Answers Range requests with the whole file. */
  noRange: boolean
  /** Needs node-fetch (not plain http, or answers direct-http.ts does not take). */
  general?: boolean
}

interface Task extends RangeTask {
  attempts: number
  mirror: number
}

/** Wrong bytes for one chunk from one URL. */
interface BadChunk {
  url: string
  found: string
}

export class Download {
  private readonly chunks: Chunk[]
  private readonly m: Manifest
  private readonly policy: RetryPolicy
  private readonly random: () => number
  private readonly mirrors: Mirror[]
  private readonly queue: Task[] = []
  private readonly bad = new Map<number, BadChunk[]>()
  private readonly ac = new AbortController()
  private readonly bufBytes: number
  private readonly disk: DiskWriter
  private feed!: DigestFeed
  private progress!: Progress
  private bytesDownloaded = 0
  private bytesReused = 0
  private requests = 0
  private fatal: unknown
  /** Where the receive waited (logged at debug at the end: which side held the pipeline back). */
  private readonly waits = { networkMs: 0, drainMs: 0 }
  private probe: Promise<void> | undefined
  private releaseProbe: (() => void) | undefined

  constructor(private readonly o: DownloadOptions) {
    this.m = o.manifest
    this.chunks = o.manifest.chunks
    this.policy = o.retry ?? DEFAULT_RETRY_POLICY
    this.random = o.random ?? Math.random
    this.mirrors = o.urls.map((url) => ({ url, dead: false, noRange: false }))
    const maxChunk = this.chunks.reduce((n, c) => Math.max(n, c.size), 0)
    this.bufBytes = Math.max(WRITE_BUFFER_BYTES, Math.ceil(maxChunk / 4096) * 4096)
    this.disk = new DiskWriter({ fh: o.partial.fh, path: o.partial.path, log: o.log, noSpace: (left, attempt) => this.noSpace(left, attempt) })
    if (o.signal) {
      if (o.signal.aborted) this.ac.abort(o.signal.reason)
      else o.signal.addEventListener('abort', () => this.ac.abort(o.signal?.reason), { once: true })
    }
  }

  private get signal(): AbortSignal {
    return this.ac.signal
  }

  async run(): Promise<DownloadResult> {
    this.feed = await DigestFeed.start(this.chunks, this.o.partial, this.signal)
    try {
      return await this.runHashed()
    } finally {
      await this.feed.close()
      await this.disk.close()
    }
  }

  private async runHashed(): Promise<DownloadResult> {
    const partial = this.o.partial
    if (this.o.reuse !== false) {
      this.bytesReused = await reuseChunks({ chunks: this.chunks, partial, cache: this.o.cache, sha256: this.m.sha256, bufBytes: this.bufBytes, write: (b, p) => this.disk.writeBuffered(b, p), log: this.o.log, signal: this.signal })
    }
    await this.feed.advance()
    const missing = partial.missing()
    const needBytes = missing.reduce((n, i) => n + this.chunks[i]!.size, 0)
    // The image's name and sha256 are on every line already (fetchImage's child logger).
    this.progress = new Progress(needBytes, this.o.log, {}, this.o.onProgress)
    if (missing.length) {
      if (this.mirrors.length === 0) throw new BootAgentError('ENOURL', `manifest of ${this.m.sha256} lists no URL and ${missing.length} chunk(s) are missing`)
      await this.o.cache.reserve(needBytes, { pinned: this.pinned() })
      for (const t of planRanges(this.chunks, missing, rangeCap(needBytes, this.o.streams ?? DEFAULT_STREAMS, this.o.maxRangeBytes ?? MAX_RANGE_BYTES))) this.queue.push({ ...t, attempts: 0, mirror: 0 })
      try {
        await this.runWorkers()
      } finally {
        // Whatever happened, what was verified is recorded for the next run.
        await partial.settle().catch(() => undefined)
        await partial.persist(true).catch(() => undefined)
      }
    }
    await partial.settle()
    await partial.persist(true)
    await this.feed.advance()
    const left = partial.missing()
    if (left.length) throw new BootAgentError('EINCOMPLETE', `${left.length} chunk(s) of ${this.m.sha256} still missing`, { missing: left.slice(0, 10) })
    if (!this.feed.complete) throw new BootAgentError('EINTERNAL', `internal: whole-image digest stopped at chunk ${this.feed.cursor}`)
    const { sha256, xxh64 } = await local('hashing the image', () => this.feed.digest())
    const ms = (x: number) => Math.round(x)
    this.o.log.debug(
      { requests: this.requests, waitedForNetworkMs: ms(this.waits.networkMs), waitedForBuffersMs: ms(this.writers.reduce((n, w) => n + w.waitedMs, 0)), drainsMs: ms(this.waits.drainMs) },
      'download pipeline: where the receive waited (network: the server or the link; buffers: hashing or disk; drains: ends of requests)',
    )
    return { sha256, xxh64, bytesDownloaded: this.bytesDownloaded, bytesReused: this.bytesReused, requests: this.requests }
  }

  /** Objects eviction must keep: this image, and the caller's. */
  private pinned(): string[] {
    return [this.m.sha256, ...(this.o.pin ?? [])]
  }

  /** The file system refused a write: the cache makes room for what is still missing, or says it is full. */
  private async noSpace(bytesLeft: number, attempt: number): Promise<void> {
    const missingBytes = this.o.partial.missing().reduce((n, i) => n + this.chunks[i]!.size, 0)
    const freed = await this.o.cache.reserve(missingBytes, { pinned: this.pinned(), refusedWrite: { attempt, bytesLeft } })
    this.o.log.warn({ freedObjects: freed.length }, 'cache full while writing: evicted least recently used objects')
  }

  // ---- network -----------------------------------------------------------

  private async runWorkers(): Promise<void> {
    const n = Math.max(1, Math.min(this.o.streams ?? DEFAULT_STREAMS, this.queue.length))
    // The first request probes Range support before more streams start.
    this.probe = new Promise<void>((r) => (this.releaseProbe = r))
    const workers = [this.worker(true)]
    for (let k = 1; k < n; k++) workers.push(this.probe.then(() => this.worker(false)))
    const settled = await Promise.allSettled(workers)
    if (this.fatal !== undefined) throw this.fatal
    for (const s of settled) if (s.status === 'rejected') throw s.reason
  }

  private fail(e: unknown): void {
    if (this.fatal === undefined) this.fatal = e
    this.ac.abort(e)
  }

  /** Write buffers are taken from a pool (one pair per stream): fresh 8 MiB per request would be garbage the GC frees late. */
  private readonly writers: ChunkWriter[] = []
  private writer(): ChunkWriter {
    return this.writers.pop() ?? new ChunkWriter(this.bufBytes, {
      verify: (sab, entries) => this.verifyChunks(sab, entries),
      write: (b, p) => local(`writing ${this.o.partial.path}`, () => this.disk.write(b, p)),
      onWritten: async (idx) => {
        faultPoint('download.chunk-written')
        await local(`recording progress in ${this.o.partial.statePath}`, () => this.o.partial.record(idx))
        faultPoint('download.progress-recorded')
      },
    })
  }

  private async worker(first: boolean): Promise<void> {
    let probing = first
    try {
      for (;;) {
        if (this.fatal !== undefined) return
        const task = this.queue.shift()
        if (!task) return
        await this.runTask(task, probing ? () => { probing = false; this.releaseProbe?.() } : undefined)
      }
    } catch (e) {
      this.fail(e)
    } finally {
      if (probing) this.releaseProbe?.()
    }
  }

  private liveMirrors(): number[] {
    return this.mirrors.map((_, i) => i).filter((i) => !this.mirrors[i]!.dead)
  }

  /** Runs one range task to completion (re-queueing what is left after an error), or throws a final error. */
  private async runTask(task: Task, onHeaders?: () => void): Promise<void> {
    for (;;) {
      if (this.signal.aborted) throw this.signal.reason
      const todo = task.chunks.filter((i) => !this.o.partial.written[i])
      if (!todo.length) return
      const live = this.liveMirrors()
      if (!live.length) throw this.finalError(task, this.lastError)
      // A chunk every live mirror served wrong is not coming right by retrying.
      for (const i of todo) {
        const bad = this.bad.get(i)
        if (bad && live.every((mi) => bad.some((b) => b.url === this.mirrors[mi]!.url))) throw this.integrityError(i)
      }
      const mi = live.find((x) => x >= task.mirror) ?? live[0]!
      const mirror = this.mirrors[mi]!
      const before = this.o.partial.verifiedBytes
      try {
        await this.fetchChunks(task, todo, mirror, onHeaders)
        onHeaders = undefined
        const left = task.chunks.filter((i) => !this.o.partial.written[i])
        if (!left.length) return
        // Chunks that came wrong: try them from the next mirror.
        task.mirror = mi + 1
        task.attempts++
      } catch (e) {
        onHeaders?.()
        onHeaders = undefined
        if (this.signal.aborted) throw this.signal.reason
        if (e instanceof LocalIoError || e instanceof CacheFullError) throw e
        const progressed = this.o.partial.verifiedBytes > before
        if (progressed) task.attempts = 0
        task.attempts++
        const retryable = isRetryable(e, this.policy)
        this.o.log.warn({ url: mirror.url, range: `${task.start}-${task.end - 1}`, attempt: task.attempts, retryable, err: e }, `fetch of chunks failed: ${(e as Error).message}`)
        if (!retryable) mirror.dead = true
        this.lastError = e
        task.mirror = mi + 1
        if (task.attempts >= this.policy.maxAttempts) throw this.finalError(task, e)
        if (retryable && (this.liveMirrors().length <= 1 || task.attempts >= this.liveMirrors().length)) {
          await (this.o.sleep ?? sleep)(retryDelayMs(e, task.attempts, this.policy, this.random), this.signal)
        }
      }
      if (task.attempts >= this.policy.maxAttempts) throw this.finalError(task, this.lastError)
    }
  }

  private lastError: unknown

  private finalError(task: Task, cause?: unknown): unknown {
    for (const i of task.chunks) if (!this.o.partial.written[i] && this.bad.has(i)) return this.integrityError(i)
    if (cause instanceof BootAgentError) return cause.withContext({ sha256: this.m.sha256, attempts: task.attempts })
    return cause ?? new BootAgentError('ENOMIRROR', `no usable URL left for image ${this.m.sha256}`, { urls: this.mirrors.map((m) => m.url) })
  }

  private integrityError(i: number): IntegrityError {
    const c = this.chunks[i]!
    const b = this.bad.get(i)!.at(-1)!
    return new IntegrityError({
      algorithm: 'sha256',
      expected: c.sha256,
      found: b.found,
      url: b.url,
      what: `chunk ${i} (bytes ${c.offset}-${c.offset + c.size - 1}) of image ${this.m.name} sha256 ${this.m.sha256}`,
      context: { image: this.m.sha256, chunk: i, offset: c.offset, size: c.size, badChunks: this.bad.size, urls: this.bad.get(i)!.map((x) => x.url) },
    })
  }

  /**
   * One request for the chunks `todo` (consecutive run within task). Streams
   * the body through a ChunkWriter; returns normally when the body ended
   * after the last chunk, throws on a network error or short body (verified
   * chunks are kept either way).
   */
  private async fetchChunks(task: Task, todo: number[], mirror: Mirror, onHeaders?: () => void): Promise<void> {
    const first = this.chunks[todo[0]!]!
    const last = this.chunks[todo.at(-1)!]!
    const want = { start: first.offset, end: last.offset + last.size }
    this.requests++
    const body = await this.openBody(mirror, mirror.noRange ? undefined : want)
    if (body.total !== undefined && body.total !== this.m.size) {
      body.cancel()
      mirror.dead = true
      throw new SizeError({ expected: this.m.size, found: body.total, url: mirror.url, what: `image ${this.m.name} sha256 ${this.m.sha256}`, context: { final: true } })
    }
    if (!body.ranged && !mirror.noRange) {
      mirror.noRange = true
      this.o.log.warn({ url: mirror.url }, 'server ignores Range: falling back to one stream of the whole file')
    }
    if (!body.ranged && this.queue.length) {
      // One stream of the whole file serves every queued task.
      for (const t of this.queue.splice(0)) task.chunks.push(...t.chunks)
      task.chunks.sort((a, b) => a - b)
      task.end = Math.max(task.end, ...task.chunks.map((i) => this.chunks[i]!.offset + this.chunks[i]!.size))
      todo = task.chunks.filter((i) => !this.o.partial.written[i])
    }
    onHeaders?.()
    const wanted = new Set(todo)
    const stopAt = this.chunks[todo.at(-1)!]!.offset + this.chunks[todo.at(-1)!]!.size
    const collect = (i: number): boolean => wanted.has(i) && !this.o.partial.written[i]
    const w = this.writer()
    const at = { pos: body.start }
    try {
      await receiveChunks(w, body, {
        chunks: this.chunks,
        at,
        stopAt,
        collect,
        from: mirror.url,
        onRead: (n, kept) => {
          this.bytesDownloaded += n
          if (kept) this.progress.add(n)
        },
        waits: this.waits,
      })
    } catch (e) {
      if (this.signal.aborted || e instanceof LocalIoError || e instanceof CacheFullError) throw e
      // Say where the stream broke; keep the code (retry decisions use it).
      const code = e instanceof BootAgentError ? e.code : 'ENETWORK'
      throw new BootAgentError(code, `${mirror.url}: ${(e as Error).message.replace(`${mirror.url}: `, '')} at byte ${at.pos} of ${body.start}-${stopAt - 1}`, { url: mirror.url, at: at.pos }, { cause: e })
    } finally {
      body.cancel()
      w.drop() // an incomplete chunk is never written
      const t = performance.now()
      await w.finish()
      this.waits.drainMs += performance.now() - t
      this.writers.push(w)
      await local(`reading back ${this.o.partial.path}`, () => this.feed.advance())
    }
    if (at.pos < stopAt) {
      throw new BootAgentError('ETRUNCATED', `${mirror.url} ended at byte ${at.pos}, expected data up to ${stopAt}`, { url: mirror.url, at: at.pos, until: stopAt })
    }
  }

  /**
   * GET for a range of the image: read straight into the write buffers
   * (direct-http.ts) when the mirror is plain http and answers simply, else
   * through node-fetch (https, redirects, chunked bodies).
   */
  private async openBody(mirror: Mirror, range: { start: number; end: number } | undefined): Promise<BodyMeta & { read: (into: Uint8Array) => Promise<number>; cancel: () => void }> {
    const opts = {
      signal: this.signal,
      ...(this.o.headersTimeoutMs ? { headersTimeoutMs: this.o.headersTimeoutMs } : {}),
      ...(this.o.idleTimeoutMs ? { idleTimeoutMs: this.o.idleTimeoutMs } : {}),
      ...(this.o.bearer ? { bearer: this.o.bearer } : {}),
      ...(this.o.nodeId ? { nodeId: this.o.nodeId } : {}),
    }
    if (!mirror.general) {
      const d = await directGet(mirror.url, range, opts)
      if (d) return d
      mirror.general = true
      this.o.log.info({ url: mirror.url }, 'this URL needs the general HTTP client (https, a redirect, or a chunked or unsized body)')
    }
    const b = await openBody(mirror.url, range, opts)
    return { ...b, read: pieceReader(b), cancel: () => b.cancel() }
  }

  /** Verdicts on received chunks (on the hash worker); a wrong one is remembered against the URL it came from. */
  private async verifyChunks(sab: SharedArrayBuffer, entries: readonly WriterEntry[]): Promise<Verdicts> {
    const items = entries.map((e) => ({ index: e.index, off: e.start, len: e.len, expected: this.chunks[e.index]!.sha256 }))
    const { found, released } = await local('hashing downloaded chunks', () => this.feed.hasher.chunks(sab, items))
    const ok = entries.map((e, k) => {
      const c = this.chunks[e.index]!
      if (found[k] === c.sha256) return true
      const list = this.bad.get(e.index) ?? []
      list.push({ url: e.from, found: found[k]! })
      this.bad.set(e.index, list)
      this.o.log.warn({ url: e.from, chunk: e.index, expected: c.sha256, found: found[k] }, 'chunk failed sha256 check; discarded')
      return false
    })
    return { ok, released }
  }
}
