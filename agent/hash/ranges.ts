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
 * The jobs run on the hash pool's workers (hash/pool.ts); the job is
 * hash/jobs.ts {@link hashJob}, which the calling thread runs too with
 * `callerHashes`.
 */
import * as nodeCrypto from 'node:crypto'
import * as fsSync from 'node:fs'
import type { Worker } from 'node:worker_threads'
import { BootAgentError } from '../core/errors.js'
import { ioBuffer } from '../core/io-buffer.js'
import { hashJob } from './jobs.js'
import { defaultHashWorkers, parkHashWorker, takeHashWorker } from './pool.js'

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
      w.postMessage({ t: 'sha256', id: job.id, path, offsets: job.offsets, sizes: job.sizes, spanEnd: job.spanEnd, bufferSize })
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
      for (const x of workers) parkHashWorker(x)
      resolve(out)
      return true
    }
    for (let i = 0; i < nWorkers; i++) {
      const w = takeHashWorker()
      workers.push(w)
      const onMessage = (msg: { id: number; digests?: Uint8Array; error?: { message: string; code?: string } }): void => {
        if (settled) return
        const job = jobs[msg.id]
        if (!job) return fail(new BootAgentError('EWORKER', `hash worker answered unknown job ${msg.id}`))
        if (msg.error) return fail(jobError(msg.error.message, msg.error.code))
        if (!complete(job, msg.digests!)) send(w)
      }
      const onError = (e: Error): void => fail(new BootAgentError('EWORKER', `hash worker failed: ${e.message}`, {}, { cause: e }))
      const onExit = (code: number): void => {
        if (!settled) fail(new BootAgentError('EWORKER', `hash worker exited (${code}) before finishing`))
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
