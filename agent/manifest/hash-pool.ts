/**
 * sha256 of many byte ranges of one file, in parallel on worker threads.
 *
 * sha256 through node:crypto runs at ~1.8 GB/s on one core and cannot be
 * split inside one range, but chunks are independent: hashing them on every
 * core is how strong verification beats `openssl dgst -sha256` (SPEC §5,
 * notes/performance.md). Reads are large (4 MiB by default, into a buffer each
 * worker reuses: the 64 KiB stream default costs 3-4x) and cover several small
 * neighbouring ranges at once.
 *
 * The worker is a small self-contained CommonJS source string started with
 * `new Worker(code, { eval: true })`, so it works unchanged inside the
 * bundle in the initramfs (no worker file to ship); the job it runs is
 * {@link hashJob}, whose source the string carries, and which the calling
 * thread runs too with `callerHashes`.
 */
import { availableParallelism } from 'node:os'
import * as nodeCrypto from 'node:crypto'
import * as fsSync from 'node:fs'
import { Worker } from 'node:worker_threads'
import { IdleWorkers } from '../idle-workers.js'
import { BootAgentError } from '../errors.js'
import { ioBuffer } from '../core/io-buffer.js'

export interface ByteRange {
  offset: number
  size: number
}

export interface HashRangesOptions {
  /**
   * Worker threads; default os.availableParallelism() (below 8 MiB in all: none).
   * 0 hashes on the calling thread, a job at a time with synchronous reads,
   * yielding to the event loop between jobs.
   */
  workers?: number
  /** Read size in bytes, default 4 MiB (1-4 MiB is the sweet spot measured here). */
  bufferSize?: number
  /** Aborts the work: workers are terminated and the promise rejects with the signal's reason. */
  signal?: AbortSignal
  /** Called as bytes are hashed, with the running total of range bytes done. */
  onProgress?: (bytesDone: number) => void
  /**
   * This thread hashes jobs too, between the workers' messages, and the
   * default is one worker fewer (os.availableParallelism() − 1): for a caller
   * with nothing else to do meanwhile (`boot-agent verify --strong`), whose
   * thread would otherwise wait while a worker it does not need starts
   * (~50 ms of a core here). Not for a thread that serves the network.
   */
  callerHashes?: boolean
}

/** Default read size, in bytes. */
export const DEFAULT_HASH_BUFFER_BYTES = 4 * 1024 * 1024
/** Ranges closer than this are read together (the gap is read and skipped). */
const MAX_GAP_BYTES = 256 * 1024
/** A job (one message to a worker) spans at most this many bytes. */
const MAX_JOB_BYTES = 32 * 1024 * 1024
/** Below this many bytes in total, starting workers costs more than it saves. */
const MIN_PARALLEL_BYTES = 8 * 1024 * 1024
/** Jobs queued per worker, so none idles while its next job's message travels. */
const JOBS_IN_FLIGHT = 2

/** What a thread needs to hash one job: the job, and its own page-aligned read buffer. */
export interface HashJobInput {
  path: string
  offsets: Float64Array
  sizes: Float64Array
  spanEnd: number
  bufferSize: number
}

/**
 * Hashes one job (ranges of one file, sorted, within [offsets[0], spanEnd))
 * with synchronous reads into `buf`: 32 bytes of sha256 per range. The same
 * function runs on the workers (its source is put into WORKER_SOURCE, so it
 * must use only its arguments: no imports, no closures) and, with
 * `callerHashes`, on the calling thread. A range that fits the buffer is
 * hashed in one piece (one-shot crypto.hash where Node has it, >= 20.12: no
 * Hash object per range, ~0.1 CPU-s per 2 GiB of 64 KiB chunks here); a read
 * starts at such a range when the buffer holds only its head.
 */
export function hashJob(
  job: HashJobInput,
  buf: Buffer,
  fs: { openSync: (p: string, f: string) => number; readSync: (fd: number, b: Uint8Array, off: number, len: number, pos: number) => number; closeSync: (fd: number) => void },
  crypto: { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Uint8Array; createHash: (alg: string) => { update: (d: Uint8Array) => unknown; digest: () => Uint8Array } },
): Uint8Array {
  const oneShot = typeof crypto.hash === 'function'
    ? (bytes: Uint8Array): Uint8Array => crypto.hash!('sha256', bytes, 'buffer')
    : (bytes: Uint8Array): Uint8Array => {
        const h = crypto.createHash('sha256')
        h.update(bytes)
        return h.digest()
      }
  const fd = fs.openSync(job.path, 'r')
  try {
    const n = job.offsets.length
    const out = new Uint8Array(32 * n)
    let bufStart = 0
    let bufEnd = 0
    // Fills buf from file offset o with up to bufferSize bytes, not past the job's span.
    const fill = (o: number): void => {
      const want = Math.min(job.bufferSize, job.spanEnd - o)
      let got = 0
      while (got < want) {
        const r = fs.readSync(fd, buf, got, want - got, o + got)
        if (r === 0) {
          const e = new Error(`${job.path} ends at ${o + got}, before byte ${o + want} of a range`) as Error & { code?: string }
          e.code = 'EBADSIZE'
          throw e
        }
        got += r
      }
      bufStart = o
      bufEnd = o + got
    }
    for (let k = 0; k < n; k++) {
      let o = job.offsets[k]!
      let rem = job.sizes[k]!
      if (rem <= job.bufferSize) {
        if (rem > 0 && (o < bufStart || o + rem > bufEnd)) fill(o)
        out.set(oneShot(rem > 0 ? buf.subarray(o - bufStart, o - bufStart + rem) : buf.subarray(0, 0)), 32 * k)
        continue
      }
      const h = crypto.createHash('sha256')
      while (rem > 0) {
        if (o < bufStart || o >= bufEnd) fill(o)
        const take = Math.min(rem, bufEnd - o)
        h.update(buf.subarray(o - bufStart, o - bufStart + take))
        o += take
        rem -= take
      }
      out.set(h.digest(), 32 * k)
    }
    return out
  } finally {
    fs.closeSync(fd)
  }
}

// The worker: jobs in, 32-byte digests out (as one transferred buffer per job).
// Plain CommonJS around hashJob's own source, evaluated as-is.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const fs = require('node:fs')
const crypto = require('node:crypto')
const hashJob = ${hashJob.toString()}
let buf = null
parentPort.on('message', (job) => {
  try {
    // Page-aligned (a WebAssembly.Memory; see core/io-buffer.ts: 4K aliasing).
    if (!buf || buf.length < job.bufferSize) {
      const pages = Math.ceil(job.bufferSize / 65536)
      buf = Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, job.bufferSize)
    }
    const out = hashJob(job, buf, fs, crypto)
    parentPort.postMessage({ id: job.id, digests: out }, [out.buffer])
  } catch (e) {
    parentPort.postMessage({ id: job.id, error: { message: String(e && e.message || e), code: e && e.code } })
  }
})
`

/** sha256 workers kept between calls (agent/idle-workers). */
const pool = new IdleWorkers(() => new Worker(WORKER_SOURCE, { eval: true }))

/**
 * Starts `count` sha256 workers now (default one per core), parked idle, so
 * that hashing asked for soon after (a strong verify, once the metadata is
 * read) does not wait for their start-up.
 */
export const prewarmHashWorkers = (count = defaultHashWorkers()): void => pool.prewarm(count)

/** The workers hashRanges uses by default: one per core, one fewer when the calling thread hashes too. */
export const defaultHashWorkers = (callerHashes = false): number => availableParallelism() - (callerHashes ? 1 : 0)

/** How many sha256 workers are idle, waiting for a job. */
export const idleHashWorkers = (): number => pool.size

/** Ends the idle sha256 workers now (they would end on their own after a few seconds). */
export const endIdleHashWorkers = (): Promise<void> => pool.end()

interface Job {
  id: number
  /** Indexes into the caller's ranges. */
  idx: Int32Array
  offsets: Float64Array
  sizes: Float64Array
  spanEnd: number
  bytes: number
}

/**
 * Groups ranges (sorted by offset) into jobs of neighbouring ranges. Plain
 * loops into typed arrays: this runs once per call, before any hashing, on
 * ~29,000 chunks for 2 GiB, mostly before V8 has optimised anything — the
 * version with array callbacks took ~25 ms of a strong verify's start here.
 */
const planJobs = (ranges: readonly ByteRange[], jobBytes: number): Job[] => {
  const n = ranges.length
  // A manifest's chunks come in file order: sort (~29,000 for 2 GiB) only when they do not.
  let sorted = true
  for (let i = 1; i < n && sorted; i++) sorted = ranges[i]!.offset >= ranges[i - 1]!.offset
  const order = new Int32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  if (!sorted) order.sort((a, b) => ranges[a]!.offset - ranges[b]!.offset)
  const jobs: Job[] = []
  let first = 0
  while (first < n) {
    const r0 = ranges[order[first]!]!
    const start = r0.offset
    let end = start + r0.size
    let bytes = r0.size
    let k = first + 1
    for (; k < n; k++) {
      const r = ranges[order[k]!]!
      const rEnd = r.offset + r.size
      if (r.offset - end > MAX_GAP_BYTES || r.offset < start || Math.max(end, rEnd) - start > jobBytes) break
      end = Math.max(end, rEnd)
      bytes += r.size
    }
    const idx = order.slice(first, k)
    const offsets = new Float64Array(idx.length)
    const sizes = new Float64Array(idx.length)
    for (let j = 0; j < idx.length; j++) {
      const r = ranges[idx[j]!]!
      offsets[j] = r.offset
      sizes[j] = r.size
    }
    jobs.push({ id: jobs.length, idx, offsets, sizes, spanEnd: end, bytes })
    first = k
  }
  return jobs
}

const validateRanges = (ranges: readonly ByteRange[]): void => {
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!
    if (!Number.isSafeInteger(r.offset) || r.offset < 0 || !Number.isSafeInteger(r.size) || r.size < 0) {
      throw new RangeError(`ranges[${i}]: offset and size must be non-negative integers, got ${r.offset}, ${r.size}`)
    }
  }
}

const abortReason = (signal: AbortSignal): unknown => signal.reason ?? new BootAgentError('EABORT', 'hashing aborted')

/**
 * sha256 (lower-case hex) of each range of the file at `path`, in the order
 * given. Ranges may be in any order, may leave gaps, and may be empty. A range
 * past the end of the file rejects with EBADSIZE.
 */
export const hashRanges = async (path: string, ranges: readonly ByteRange[], opts: HashRangesOptions = {}): Promise<string[]> => {
  validateRanges(ranges)
  if (opts.signal?.aborted) throw abortReason(opts.signal)
  const bufferSize = opts.bufferSize ?? DEFAULT_HASH_BUFFER_BYTES
  if (!Number.isSafeInteger(bufferSize) || bufferSize < 4096) throw new RangeError(`bufferSize must be an integer >= 4096, got ${bufferSize}`)
  const total = ranges.reduce((s, r) => s + r.size, 0)
  const asked = opts.workers ?? defaultHashWorkers(opts.callerHashes)
  if (!Number.isSafeInteger(asked) || asked < 0) throw new RangeError(`workers must be a non-negative integer, got ${asked}`)
  if (ranges.length === 0) return []
  // Small inputs (unless workers were asked for) and `workers: 0`: this thread alone.
  const wanted = opts.workers === undefined && total < MIN_PARALLEL_BYTES ? 0 : asked
  const caller = opts.callerHashes === true || wanted === 0
  const threads = wanted + (caller ? 1 : 0)
  // Jobs small enough that every thread gets several (load balance), large enough to amortise messages.
  const jobBytes = Math.max(bufferSize, Math.min(MAX_JOB_BYTES, Math.ceil(total / (threads * 4))))
  const jobs = planJobs(ranges, jobBytes)
  const nWorkers = Math.min(wanted, caller ? jobs.length - 1 : jobs.length)
  const out: string[] = new Array<string>(ranges.length)
  const jobError = (message: string, code?: string): BootAgentError =>
    new BootAgentError(code === 'EBADSIZE' ? 'EBADSIZE' : 'EHASHIO', `hashing ${path}: ${message}`, { path, errno: code })

  return new Promise<string[]>((resolve, reject) => {
    const workers: Worker[] = []
    const detach: (() => void)[] = []
    let next = 0
    let finished = 0
    let bytesDone = 0
    let settled = false
    /** Ends the call: no more listening to the signal or to the workers. */
    const settle = (): void => {
      settled = true
      opts.signal?.removeEventListener('abort', onAbort)
      for (const d of detach) d()
    }
    const fail = (e: unknown): void => {
      if (settled) return
      settle()
      // A worker may be in the middle of a job: it is ended, not parked.
      for (const w of workers) void w.terminate()
      reject(e)
    }
    const onAbort = (): void => fail(abortReason(opts.signal!))
    opts.signal?.addEventListener('abort', onAbort, { once: true })

    const send = (w: Worker): void => {
      const job = jobs[next++]
      if (!job) return
      w.postMessage({ id: job.id, path, offsets: job.offsets, sizes: job.sizes, spanEnd: job.spanEnd, bufferSize })
    }
    /** Records a job's digests; true when it was the last job (the call is then resolved). */
    const complete = (job: Job, digests: Uint8Array): boolean => {
      const d = Buffer.from(digests.buffer, digests.byteOffset, digests.byteLength)
      for (let k = 0; k < job.idx.length; k++) out[job.idx[k]!] = d.toString('hex', 32 * k, 32 * k + 32)
      bytesDone += job.bytes
      opts.onProgress?.(bytesDone)
      if (++finished < jobs.length) return false
      // Every job answered: every worker is idle, kept for the next call.
      settle()
      for (const x of workers) pool.park(x)
      resolve(out)
      return true
    }
    for (let i = 0; i < nWorkers; i++) {
      const w = pool.take()
      workers.push(w)
      const onMessage = (msg: { id: number; digests?: Uint8Array; error?: { message: string; code?: string } }): void => {
        if (settled) return
        const job = jobs[msg.id]
        if (!job) return fail(new BootAgentError('EUNEXPECTED', `hash worker answered unknown job ${msg.id}`))
        if (msg.error) return fail(jobError(msg.error.message, msg.error.code))
        if (!complete(job, msg.digests!)) send(w)
      }
      const onError = (e: Error): void => fail(new BootAgentError('EUNEXPECTED', `hash worker failed: ${e.message}`, {}, { cause: e }))
      const onExit = (code: number): void => {
        if (!settled) fail(new BootAgentError('EUNEXPECTED', `hash worker exited (${code}) before finishing`))
      }
      w.on('message', onMessage)
      w.on('error', onError)
      w.on('exit', onExit)
      detach.push(() => {
        w.off('message', onMessage)
        w.off('error', onError)
        w.off('exit', onExit)
      })
      for (let j = 0; j < JOBS_IN_FLIGHT; j++) send(w)
    }
    if (!caller) return
    // This thread takes the next job whenever it is free (every job, with no
    // workers), and lets the workers' answers (which hand them their next jobs) in between.
    const buf = ioBuffer(bufferSize)
    const own = async (): Promise<void> => {
      while (!settled) {
        const job = jobs[next++]
        if (!job) return
        let digests: Uint8Array
        try {
          digests = hashJob({ path, offsets: job.offsets, sizes: job.sizes, spanEnd: job.spanEnd, bufferSize }, buf, fsSync, nodeCrypto)
        } catch (e) {
          return fail(jobError(e instanceof Error ? e.message : String(e), (e as NodeJS.ErrnoException).code))
        }
        if (settled || complete(job, digests)) return
        await new Promise<void>((r) => setImmediate(r))
      }
    }
    void own()
  })
}

/**
 * sha256 (hex) of the first `size` bytes of a file (EBADSIZE if it is shorter),
 * with large reads, on one worker thread by default (so the caller's thread is free).
 */
export const hashFile = async (path: string, size: number, opts: HashRangesOptions = {}): Promise<string> => {
  const [h] = await hashRanges(path, [{ offset: 0, size }], { workers: 1, ...opts })
  return h!
}
