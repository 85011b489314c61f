/**
 * The download engine behind fetchImage: fills the missing chunks of a
 * partial object from local donors (delta) and from the image's URLs, each
 * chunk verified (sha256) as it lands, then checks the whole image's sha256.
 *
 * One pass over the bytes: every network piece is copied once into a large
 * (shared) write buffer and written from there with large writes. The sha256
 * work runs on a worker thread (hash-worker.ts) reading the same buffer: each
 * completed chunk is verified there, and fed to the whole-image sha256 when
 * it is next in order, while this thread keeps receiving; a buffer is written
 * (verified chunks only) once every chunk in it has its verdict. Only bytes
 * that were not next in order (parallel ranges, resumed or reused chunks) are
 * read back — from the page cache — to extend the whole-image digests.
 */
import { createHash } from 'node:crypto'
import { BootAgentError, CacheFullError, IntegrityError, SizeError, isErrno } from '../errors.js'
import type { Logger } from '../log.js'
import type { Chunk, Manifest } from '../manifest/types.js'
import { xxhWasmModule } from '../hash/xxh.js'
import type { PartialObject } from '../cache/partial.js'
import type { Cache } from '../cache/store.js'
import { DownloadHasher } from '../hash/download-hasher.js'
import { openBody, pieceReader, type BodyMeta } from './http.js'
import { directGet } from './direct-http.js'
import { planRanges, type RangeTask } from './plan.js'
import { Progress, type ProgressInfo } from './progress.js'
import { backoffMs, DEFAULT_RETRY_POLICY, isRetryable, sleep, type RetryPolicy } from './retry.js'
import { open, type FileHandle } from 'node:fs/promises'
import { constants as fsConstants } from 'node:fs'
import { ioBuffer } from '../cache/fs-util.js'

/** Size of each stream's write buffer (large writes: notes/performance.md). */
export const WRITE_BUFFER_BYTES = 4 * 1024 * 1024
/** Read-back buffers for the whole-image digests (1 MiB reads are as fast as 4 from the page cache; less RSS here and in the whole-image worker's wasm memory). */
export const FEED_BUFFER_BYTES = 1024 * 1024
/**
 * Write buffers per stream: one fills while the others are verified (on the
 * hash worker) and written; with two, the receive waited for each buffer's
 * verify + write in turn.
 */
export const WRITE_BUFFERS = 4
/** Runs shorter than this are written through the page cache (not worth an O_DIRECT split). */
const DIRECT_MIN_BYTES = 256 * 1024
/** Longest single Range request. */
export const MAX_RANGE_BYTES = 16 * 1024 * 1024
/**
 * Parallel range requests by default: one. Measured here (2 GiB from nginx on
 * loopback, 2 cores, 2026-11-21): 1 stream 5.7 s, RSS 129 MB; 2 streams 9.3 s,
 * RSS 148 MB. The bytes a stream receives ahead of the in-order cursor are
 * written with O_DIRECT, so the whole-image digests must read them back from
 * the disk, not the page cache. More streams (`--streams`) serve links where
 * one connection is capped below the disk's rate.
 */
export const DEFAULT_STREAMS = 1

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
  /** Copy chunks found in other cached objects instead of downloading them. */
  reuse?: boolean
  onProgress?: (p: ProgressInfo) => void
  headersTimeoutMs?: number
  idleTimeoutMs?: number
}

export interface DownloadResult {
  /** xxh64 (hex) of each 64 MiB segment of the image (cache/meta.ts). */
  xxh64: string[]
  sha256: string
  bytesDownloaded: number
  bytesReused: number
  requests: number
}

/** A failure of this machine's disk, not of the server: never retried on another mirror. */
export class LocalIoError extends BootAgentError {
  constructor(what: string, cause: unknown) {
    super('ELOCALIO', `${what}: ${(cause as Error)?.message ?? String(cause)}`, { errno: (cause as { code?: unknown })?.code }, { cause })
  }
}

const local = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
  try {
    return await fn()
  } catch (e) {
    if (e instanceof BootAgentError) throw e // CacheFullError, SizeError, aborts: already typed
    if (e instanceof Error && e.name === 'AbortError') throw e
    throw new LocalIoError(what, e)
  }
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
  private cursor = 0
  private cursorBusy = false
  private readBufs: [SharedArrayBuffer, SharedArrayBuffer] | undefined
  private hasher!: DownloadHasher
  private progress!: Progress
  private bytesDownloaded = 0
  private bytesReused = 0
  private requests = 0
  private fatal: unknown
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
    if (o.signal) {
      if (o.signal.aborted) this.ac.abort(o.signal.reason)
      else o.signal.addEventListener('abort', () => this.ac.abort(o.signal?.reason), { once: true })
    }
  }

  private get signal(): AbortSignal {
    return this.ac.signal
  }

  async run(): Promise<DownloadResult> {
    this.hasher = new DownloadHasher(await xxhWasmModule(), (i) => {
      // The worker fed chunk i to the whole-image digests (in image order).
      this.cursor = Math.max(this.cursor, i + 1)
    })
    try {
      return await this.runHashed()
    } finally {
      await this.hasher.close()
      await (await this.direct)?.close().catch(() => undefined)
      await this.refusedDirect?.close().catch(() => undefined)
    }
  }

  private async runHashed(): Promise<DownloadResult> {
    if (this.o.reuse !== false) await this.reuseLocal()
    await this.advanceCursor()
    const missing = this.o.partial.missing()
    const needBytes = missing.reduce((n, i) => n + this.chunks[i]!.size, 0)
    // The image's name and sha256 are on every line already (fetchImage's child logger).
    this.progress = new Progress(needBytes, this.o.log, {}, this.o.onProgress)
    if (missing.length) {
      if (this.mirrors.length === 0) throw new BootAgentError('ENOURL', `manifest of ${this.m.sha256} lists no URL and ${missing.length} chunk(s) are missing`)
      await this.ensureSpace(needBytes)
      for (const t of planRanges(this.chunks, missing, this.o.maxRangeBytes ?? MAX_RANGE_BYTES)) this.queue.push({ ...t, attempts: 0, mirror: 0 })
      try {
        await this.runWorkers()
      } finally {
        // Whatever happened, what was verified is recorded for the next run.
        await this.settlePersist().catch(() => undefined)
        await this.o.partial.persist(true).catch(() => undefined)
      }
    }
    await this.settlePersist()
    await this.o.partial.persist(true)
    await this.advanceCursor()
    const left = this.o.partial.missing()
    if (left.length) throw new BootAgentError('EINCOMPLETE', `${left.length} chunk(s) of ${this.m.sha256} still missing`, { missing: left.slice(0, 10) })
    if (this.cursor !== this.chunks.length) throw new Error(`internal: whole-image digest stopped at chunk ${this.cursor}`)
    const { sha256, xxh64 } = await local('hashing the image', () => this.hasher.digest())
    return { sha256, xxh64, bytesDownloaded: this.bytesDownloaded, bytesReused: this.bytesReused, requests: this.requests }
  }

  // ---- whole-image digests, in order -------------------------------------

  /** Extends the digests over written chunks from disk (page cache), as far as they are contiguous. */
  private async advanceCursor(): Promise<void> {
    if (this.cursorBusy) return
    this.cursorBusy = true
    try {
      const w = this.o.partial.written
      while (this.cursor < this.chunks.length && w[this.cursor]) {
        let j = this.cursor
        while (j + 1 < this.chunks.length && w[j + 1]) j++
        const start = this.chunks[this.cursor]!.offset
        const end = this.chunks[j]!.offset + this.chunks[j]!.size
        await this.feedFromDisk(start, end, j + 1)
        this.cursor = Math.max(this.cursor, j + 1)
      }
    } finally {
      this.cursorBusy = false
    }
  }

  /**
   * Reads [start, end) of the partial file into two shared buffers in turn,
   * extending the whole-image digests on the whole-image worker (which hashes one buffer
   * while the other is read). `nextChunk` follows `end`.
   */
  private async feedFromDisk(start: number, end: number, nextChunk: number): Promise<void> {
    const shared = (): SharedArrayBuffer => ioBuffer(FEED_BUFFER_BYTES, { shared: true }).buffer as SharedArrayBuffer // page-aligned
    const sabs = (this.readBufs ??= [shared(), shared()])
    const fed: [Promise<void> | undefined, Promise<void> | undefined] = [undefined, undefined]
    let pos = start
    let k = 0
    try {
      while (pos < end) {
        if (this.signal.aborted) throw this.signal.reason
        await fed[k] // the whole-image worker is done with this buffer
        const buf = Buffer.from(sabs[k]!)
        const want = Math.min(buf.length, end - pos)
        let got = 0
        while (got < want) {
          const { bytesRead } = await this.o.partial.fh.read(buf, got, want - got, pos + got)
          if (bytesRead === 0) throw new SizeError({ expected: end - start, found: pos + got - start, what: `partial file ${this.o.partial.path} at ${start}` })
          got += bytesRead
        }
        pos += got
        fed[k] = this.hasher.feed(sabs[k]!, 0, got, pos >= end ? nextChunk : undefined)
        fed[k]!.catch(() => undefined)
        k ^= 1
      }
    } finally {
      await Promise.allSettled(fed.filter((p) => p !== undefined))
    }
    for (const p of fed) await p
  }

  // ---- space -------------------------------------------------------------

  private async ensureSpace(needBytes: number): Promise<void> {
    const free = await this.o.cache.freeBytes()
    if (free >= needBytes) return
    await this.o.cache.evict({ needBytes: needBytes - free, pinned: [this.m.sha256, ...(this.o.pin ?? [])] })
    const after = await this.o.cache.freeBytes()
    if (after < needBytes) throw new CacheFullError({ needed: needBytes, available: after, dir: this.o.cache.dir })
  }

  /**
   * A second handle on the partial file opened with O_DIRECT; null when the
   * file system refuses it. The promise is kept, not the handle: writes from
   * several buffers run at once, and each must not open a handle of its own
   * (one would be left open, keeping the cache's file system busy).
   */
  private direct: Promise<FileHandle | null> | undefined
  private refusedDirect: FileHandle | undefined

  private directHandle(): Promise<FileHandle | null> {
    return (this.direct ??= open(this.o.partial.path, fsConstants.O_WRONLY | fsConstants.O_DIRECT).catch((e: unknown) => {
      this.o.log.debug({ err: e, path: this.o.partial.path }, 'O_DIRECT not available here: buffered writes')
      return null
    }))
  }

  /**
   * Writes verified bytes at `pos`: the page-aligned middle of a large run
   * with O_DIRECT (large aligned direct writes measured ~2× buffered ones
   * + fsync here, and leave no dirty pages for the final fsync), the
   * unaligned ends through the page cache. `buf`'s address is congruent
   * to `pos` modulo a page (ChunkWriter), so the middle is aligned in
   * memory too.
   */
  private async writeData(buf: Uint8Array, pos: number): Promise<void> {
    const end = pos + buf.length
    const a = Math.ceil(pos / DIRECT_ALIGN) * DIRECT_ALIGN
    const e = Math.floor(end / DIRECT_ALIGN) * DIRECT_ALIGN
    const dfh = e - a >= DIRECT_MIN_BYTES ? await this.directHandle() : null
    if (!dfh) return this.writeAt(buf, pos)
    if (a > pos) await this.writeAt(buf.subarray(0, a - pos), pos)
    try {
      await this.writeAt(buf.subarray(a - pos, e - pos), a, dfh)
    } catch (err) {
      if (!isErrno(err, 'EINVAL')) throw err
      this.o.log.debug({ err, path: this.o.partial.path }, 'O_DIRECT write refused: buffered writes from now on')
      this.direct = Promise.resolve(null)
      this.refusedDirect = dfh // closed at the end: another write may still be going through it
      await this.writeAt(buf.subarray(a - pos, e - pos), a)
    }
    if (end > e) await this.writeAt(buf.subarray(e - pos), e)
  }

  /** Writes `buf` at `pos` fully (through `fh`, default the partial's own handle); ENOSPC → evict and retry, then CacheFullError. */
  private async writeAt(buf: Uint8Array, pos: number, fh: FileHandle = this.o.partial.fh): Promise<void> {
    let off = 0
    for (let tries = 0; off < buf.length; ) {
      try {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off)
        off += bytesWritten
      } catch (e) {
        if (!isErrno(e, 'ENOSPC', 'EDQUOT') || tries++ >= 3) {
          if (isErrno(e, 'ENOSPC', 'EDQUOT')) throw new CacheFullError({ needed: buf.length - off, available: await this.o.cache.freeBytes(), dir: this.o.cache.dir })
          throw e
        }
        const missingBytes = this.o.partial.missing().reduce((n, i) => n + this.chunks[i]!.size, 0)
        const freed = await this.o.cache.evict({ needBytes: missingBytes, pinned: [this.m.sha256, ...(this.o.pin ?? [])] })
        this.o.log.warn({ freedObjects: freed.length }, 'cache full while writing: evicted least recently used objects')
        if (freed.length === 0) throw new CacheFullError({ needed: missingBytes, available: await this.o.cache.freeBytes(), dir: this.o.cache.dir })
      }
    }
  }

  // ---- delta: chunks already in other cached objects ----------------------

  private async reuseLocal(): Promise<void> {
    const missing = this.o.partial.missing()
    if (!missing.length) return
    const wanted = new Set(missing.map((i) => this.chunks[i]!.sha256))
    const sources = await this.o.cache.findChunkSources(wanted, this.m.sha256)
    if (!sources.size) return
    // Donor chunks are verified above, on this thread (a rare path).
    const w = new ChunkWriter(this.bufBytes, { verify: async (_, entries) => ({ ok: entries.map(() => true) }), write: (b, p) => this.writeAt(b, p), onWritten: (idx) => this.chunkWritten(idx) })
    const handles = new Map<string, Awaited<ReturnType<typeof open>>>()
    const scratch = Buffer.allocUnsafe(this.bufBytes)
    try {
      for (const i of missing) {
        if (this.signal.aborted) throw this.signal.reason
        const c = this.chunks[i]!
        const src = sources.get(c.sha256)
        if (!src) continue
        let fh = handles.get(src.path)
        if (!fh) {
          fh = await open(src.path, 'r')
          handles.set(src.path, fh)
        }
        const { bytesRead } = await fh.read(scratch, 0, c.size, src.offset)
        const bytes = scratch.subarray(0, bytesRead)
        // A donor is another object on an untrusted disk: its chunk is used only if it verifies.
        if (bytesRead !== c.size || createHash('sha256').update(bytes).digest('hex') !== c.sha256) {
          this.o.log.warn({ object: src.object, chunk: c.sha256 }, 'cached donor chunk does not verify; downloading it instead')
          continue
        }
        await w.add(c, bytes)
        this.bytesReused += c.size
      }
      await w.finish()
    } finally {
      for (const fh of handles.values()) await fh.close().catch(() => undefined)
    }
    if (this.bytesReused) this.o.log.info({ bytesReused: this.bytesReused }, 'reused chunks from other cached objects')
  }

  private persistRun: Promise<void> | undefined
  private persistError: unknown

  /**
   * Records written chunks. The state is made durable in the background
   * (its fsync of the data file would otherwise stall the write pipeline
   * every second); a failure surfaces at the next chunk or at the end.
   */
  private async chunkWritten(indexes: number[]): Promise<void> {
    if (this.persistError !== undefined) throw this.persistError
    this.o.partial.markWritten(indexes)
    this.persistRun ??= this.o.partial
      .persist()
      .catch((e: unknown) => {
        this.persistError ??= e
      })
      .finally(() => {
        this.persistRun = undefined
      })
  }

  /** Waits for a background persist; rethrows its failure. */
  private async settlePersist(): Promise<void> {
    await this.persistRun
    if (this.persistError !== undefined) throw this.persistError
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
      write: (b, p) => local(`writing ${this.o.partial.path}`, () => this.writeData(b, p)),
      onWritten: (idx) => local(`recording progress in ${this.o.partial.statePath}`, () => this.chunkWritten(idx)),
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
          const ra = e instanceof Error && 'retryAfterMs' in e ? (e as { retryAfterMs?: number }).retryAfterMs : undefined
          await sleep(backoffMs(task.attempts, this.policy, this.random, ra), this.signal)
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
    let pos = body.start
    // Index of the chunk at `pos` (requests start at a chunk boundary: a range's first chunk, or 0).
    let ci = this.chunkAt(pos)
    // End of the run of chunks to keep that starts at chunk ci: a read never crosses from kept bytes into unwanted ones.
    let runEnd = -1
    try {
      await w.seek(pos)
      while (pos < stopAt) {
        const keep = collect(ci)
        let limit: number
        if (keep) {
          if (runEnd <= pos) {
            let j = ci
            while (j + 1 < this.chunks.length && this.chunks[j + 1]!.offset < stopAt && collect(j + 1)) j++
            runEnd = this.chunks[j]!.offset + this.chunks[j]!.size
          }
          limit = runEnd - pos
        } else {
          limit = this.chunks[ci]!.offset + this.chunks[ci]!.size - pos
        }
        let space = w.space()
        if (space.length === 0) {
          await w.rotate()
          continue
        }
        if (space.length > limit) space = space.subarray(0, limit)
        const n = await body.read(space)
        if (n === 0) break
        this.bytesDownloaded += n
        w.received(n)
        pos += n
        if (keep) this.progress.add(n)
        for (let c = this.chunks[ci]; c && c.offset < stopAt && w.pending >= c.size; c = this.chunks[ci]) {
          if (collect(ci)) w.complete(c, mirror.url)
          else await w.discard(c.size)
          ci++
        }
      }
    } catch (e) {
      if (this.signal.aborted || e instanceof LocalIoError || e instanceof CacheFullError) throw e
      // Say where the stream broke; keep the code (retry decisions use it).
      const code = e instanceof BootAgentError ? e.code : 'ENETWORK'
      throw new BootAgentError(code, `${mirror.url}: ${(e as Error).message.replace(`${mirror.url}: `, '')} at byte ${pos} of ${body.start}-${stopAt - 1}`, { url: mirror.url, at: pos }, { cause: e })
    } finally {
      body.cancel()
      w.drop() // an incomplete chunk is never written
      await w.finish()
      this.writers.push(w)
      await local(`reading back ${this.o.partial.path}`, () => this.advanceCursor())
    }
    if (pos < stopAt) {
      throw new BootAgentError('ETRUNCATED', `${mirror.url} ended at byte ${pos}, expected data up to ${stopAt}`, { url: mirror.url, at: pos, until: stopAt })
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
    const { found, released } = await local('hashing downloaded chunks', () => this.hasher.chunks(sab, items))
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

  private chunkAt(pos: number): number {
    let lo = 0
    let hi = this.chunks.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.chunks[mid]!.offset <= pos) lo = mid
      else hi = mid - 1
    }
    return lo
  }
}

/** A completed chunk in a ChunkWriter buffer. */
export interface WriterEntry {
  index: number
  /** Offset of its bytes in the buffer. */
  start: number
  len: number
  /** Where it came from (for integrity errors). */
  from: string
}

/** Per entry, whether its bytes may be written; the buffer is reused only after `released` settles. */
export interface Verdicts {
  ok: boolean[]
  released?: Promise<void>
}

export interface ChunkWriterHooks {
  /** Says, per entry, whether its bytes (untouched until this settles and then until `released`) may be written. */
  verify: (sab: SharedArrayBuffer, entries: readonly WriterEntry[]) => Promise<Verdicts>
  write: (b: Uint8Array, pos: number) => Promise<void>
  /** Called with the indexes of the chunks written, after their write. */
  onWritten: (indexes: number[]) => Promise<void>
}

/** Alignment of O_DIRECT writes: a page covers every logical block size in use. */
export const DIRECT_ALIGN = 4096

/**
 * Holds received chunks in a large shared, page-aligned buffer and writes
 * contiguous runs of the verified ones with single large writes. The
 * buffers (WRITE_BUFFERS) are used in turn, so that the others are being
 * verified and written while one fills (the network is not paused by the
 * hashing or the disk).
 *
 * Bytes are received in place: the caller reads the network straight into
 * `space()`, says `received(n)`, then, for each whole chunk at the front of
 * what is pending, `complete` (to be verified and written) or `discard`.
 * A byte's offset in the buffer is congruent to its file offset modulo a
 * page, so the page-aligned middle of every run can be written with O_DIRECT.
 * At a flush, the buffer's completed chunks are verified in one batch and
 * the good ones written; `drain` waits for the last write; verifier and
 * write errors surface there or at the next flush.
 */
export class ChunkWriter {
  private readonly bufs: Buffer[]
  /** Each buffer's verify-and-write in flight (a buffer is refilled only after its own finished). */
  private readonly inflight: Array<Promise<void> | undefined>
  private active = 0
  /** Buffer offset of the region's first byte (≡ regionStart modulo DIRECT_ALIGN). */
  private lead = 0
  /** File offset of the region's first byte. */
  private regionStart = 0
  private fill = 0 // bytes of completed chunks (awaiting their verdict)
  /** Bytes received after the completed chunks: the start of the chunk being filled. */
  pending = 0
  private entries: WriterEntry[] = []

  constructor(
    bytes: number,
    private readonly hooks: ChunkWriterHooks,
    buffers = WRITE_BUFFERS,
  ) {
    this.bufs = Array.from({ length: Math.max(2, buffers) }, () => ioBuffer(bytes + DIRECT_ALIGN, { shared: true }))
    this.inflight = this.bufs.map(() => undefined)
  }

  private get buf(): Buffer {
    return this.bufs[this.active]!
  }

  /** Starts receiving at file offset `offset` (nothing pending); completed chunks that do not end there are flushed first. */
  async seek(offset: number): Promise<void> {
    this.pending = 0
    if (this.fill > 0 && this.regionStart + this.fill === offset) return
    if (this.fill > 0) await this.flush()
    this.regionStart = offset
    this.lead = offset % DIRECT_ALIGN
  }

  /** Free room for the next bytes; empty when the buffer is full (then `rotate`). */
  space(): Buffer {
    return this.buf.subarray(this.lead + this.fill + this.pending)
  }

  received(n: number): void {
    this.pending += n
  }

  /** The first `c.size` pending bytes are chunk `c`, received from `from`: verified and written at the flush. */
  complete(c: Chunk, from: string): void {
    this.entries.push({ index: c.index, start: this.lead + this.fill, len: c.size, from })
    this.fill += c.size
    this.pending -= c.size
  }

  /** The pending bytes (exactly one chunk of `n` bytes) are not wanted; the next byte follows them in the file. */
  async discard(n: number): Promise<void> {
    if (this.pending !== n) throw new Error(`internal: discarding ${n} bytes with ${this.pending} pending`)
    await this.seek(this.regionStart + this.fill + n)
  }

  /** Drops the bytes of an incomplete chunk (a body that ended early): never written. */
  drop(): void {
    this.pending = 0
  }

  /** The buffer is full: flushes its completed chunks and carries the pending bytes (a chunk in progress) to the other buffer. */
  async rotate(): Promise<void> {
    const from = this.buf
    const carryAt = this.lead + this.fill
    const carryLen = this.pending
    const offset = this.regionStart + this.fill
    this.pending = 0
    if (this.fill > 0) await this.flush()
    else await this.next()
    this.regionStart = offset
    this.lead = offset % DIRECT_ALIGN
    if (this.lead + carryLen > this.buf.length) throw new Error(`internal: ${carryLen} pending bytes do not fit a write buffer`)
    from.copy(this.buf, this.lead, carryAt, carryAt + carryLen)
    this.pending = carryLen
  }

  /** Adds a whole chunk from memory (delta: bytes found in another cached object). */
  async add(c: Chunk, bytes: Uint8Array, from = 'local'): Promise<void> {
    await this.seek(c.offset)
    if (this.space().length < bytes.length) await this.rotate()
    this.space().set(bytes)
    this.received(bytes.length)
    this.complete(c, from)
  }

  /** Moves to the next buffer, once its previous verify-and-write finished (rethrowing its error). */
  private async next(): Promise<void> {
    this.active = (this.active + 1) % this.bufs.length
    const p = this.inflight[this.active]
    this.inflight[this.active] = undefined
    if (p) await p
  }

  /** Starts verifying-then-writing the completed chunks and moves to the next buffer. */
  async flush(): Promise<void> {
    if (this.fill === 0) return
    const buf = this.buf
    const sab = buf.buffer as SharedArrayBuffer
    const base = this.regionStart - this.lead - buf.byteOffset
    const entries = this.entries.map((e) => ({ ...e, start: e.start + buf.byteOffset }))
    this.fill = 0
    this.entries = []
    const done = (async () => {
      const { ok: verdicts, released } = await this.hooks.verify(sab, entries)
      try {
        const written: number[] = []
        for (let k = 0; k < entries.length; ) {
          if (!verdicts[k]) {
            k++
            continue
          }
          let j = k
          while (j + 1 < entries.length && verdicts[j + 1]) j++
          const from = entries[k]!.start
          const to = entries[j]!.start + entries[j]!.len
          await this.hooks.write(new Uint8Array(sab, from, to - from), base + from)
          for (let x = k; x <= j; x++) written.push(entries[x]!.index)
          k = j + 1
        }
        if (written.length) await this.hooks.onWritten(written)
      } finally {
        // The verifier may still be reading the buffer (feeding the digests): not refilled before.
        // A failed worker rejects it; that failure surfaces at the next verdict or the digest.
        await released?.catch(() => undefined)
      }
    })()
    // Observed when this buffer is reused or at the drain; keep it from being reported as unhandled meanwhile.
    done.catch(() => undefined)
    this.inflight[this.active] = done
    await this.next()
  }

  /** Waits for every verify-and-write in flight; rethrows the first error. */
  async drain(): Promise<void> {
    const ps = this.inflight.splice(0, this.inflight.length, ...this.inflight.map(() => undefined))
    let first: unknown
    for (const p of ps) await p?.catch((e: unknown) => (first ??= e))
    if (first !== undefined) throw first
  }

  /** Flushes everything and waits for it to be written. */
  async finish(): Promise<void> {
    await this.flush()
    await this.drain()
  }
}
