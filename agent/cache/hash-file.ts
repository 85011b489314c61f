/**
 * Re-verifying a file at disk speed (notes/performance.md): large reused
 * page-aligned buffers, pipelined or synchronous reads, and the fast digest
 * (xxh64 per 64 MiB segment) on every core. The default 64 KiB stream pieces
 * cost 3–4×.
 */
import { createHash } from 'node:crypto'
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import xxhash, { type XXHashAPI } from 'xxhash-wasm'
import type { Chunk } from '../manifest/types.js'
import { defaultHashWorkers, endIdleHashWorkers, hashRanges, prewarmHashWorkers } from '../manifest/hash-pool.js'
import { BootAgentError, isErrno } from '../errors.js'
import { IdleWorkers } from '../idle-workers.js'
import { ioBuffer } from '../core/io-buffer.js'
import { XXH64_SEGMENT_BYTES, segmentCount } from './meta.js'

/** Read size for whole-file hashing. */
export const READ_BUFFER_BYTES = 4 * 1024 * 1024

let xxApi: Promise<XXHashAPI> | undefined
let xxModule: Promise<unknown> | undefined

interface WasmNamespace {
  instantiate: (...args: unknown[]) => Promise<{ module: unknown }>
}

/** The xxhash-wasm instance (compiled once per process). */
export const xxh = (): Promise<XXHashAPI> => {
  if (!xxApi) {
    // xxhash-wasm keeps its compiled module to itself: catch it on the way
    // (it instantiates synchronously inside the call) so that a worker thread
    // can run the same code (transport/hash-worker.ts).
    const wasm = (globalThis as unknown as { WebAssembly: WasmNamespace }).WebAssembly
    const instantiate = wasm.instantiate
    wasm.instantiate = (...args: unknown[]) => {
      const p = instantiate.apply(wasm, args)
      xxModule = p.then((r) => r.module)
      return p
    }
    try {
      xxApi = xxhash()
    } finally {
      wasm.instantiate = instantiate
    }
  }
  return xxApi
}

/**
 * xxhash-wasm's compiled WebAssembly.Module (exports mem, init64, update64,
 * digest64; a 64-bit state is 88 bytes), to post to a worker thread.
 */
export const xxhWasmModule = async (): Promise<unknown> => {
  await xxh()
  if (!xxModule) throw new Error('internal: the xxhash-wasm module was not captured')
  return xxModule
}

export const xxh64Hex = (v: bigint): string => v.toString(16).padStart(16, '0')

const throwIfAborted = (signal?: AbortSignal): void => {
  if (signal?.aborted) throw signal.reason ?? new Error('aborted')
}

/**
 * Reads [start, start+length) of `fh` in order, calling `each` with every
 * piece while the next read is already in flight. Two buffers alternate, so
 * a piece is only valid until `each` returns.
 */
export const readPipelined = async (
  fh: FileHandle,
  start: number,
  length: number,
  each: (piece: Uint8Array) => void,
  opts: { signal?: AbortSignal; bufferBytes?: number; buffers?: readonly [Buffer, Buffer] } = {},
): Promise<number> => {
  // Callers on a hot path pass their own pair: fresh 4 MiB buffers per call are garbage the GC frees late (RSS).
  const bufs = opts.buffers ?? [ioBuffer(opts.bufferBytes ?? READ_BUFFER_BYTES), ioBuffer(opts.bufferBytes ?? READ_BUFFER_BYTES)]
  const size = Math.min(bufs[0].length, bufs[1].length)
  let pos = start
  const end = start + length
  let which = 0
  const readAt = (p: number, b: Buffer) => fh.read(b, 0, Math.min(size, end - p), p)
  let pending = pos < end ? readAt(pos, bufs[which]!) : undefined
  let total = 0
  while (pending) {
    throwIfAborted(opts.signal)
    const { bytesRead, buffer } = await pending
    if (bytesRead === 0) break // file shorter than asked: caller compares sizes
    pos += bytesRead
    which ^= 1
    pending = pos < end ? readAt(pos, bufs[which]!) : undefined
    each(buffer.subarray(0, bytesRead))
    total += bytesRead
  }
  return total
}

/** The raw exports of xxhash-wasm's module: one 64-bit state (88 bytes) at `st`, input at `p` in `mem`. */
interface XxhRaw {
  mem: { buffer: ArrayBuffer; grow: (pages: number) => number }
  init64: (st: number, seed: bigint) => void
  update64: (st: number, p: number, n: number) => void
  digest64: (st: number) => bigint
}

/**
 * Bytes per read while hashing segments. Two threads hashing 2 GiB from the
 * page cache here, fastest of 7 runs in each of three rounds: 1 MiB reads
 * 276, 244, 396 ms; 4 MiB 255, 251, 509 ms; 512 KiB and 2 MiB like 1 MiB; the
 * medians favoured 0.5–2 MiB by 5–10 % (a buffer that stays in the core's
 * cache for the hash that follows). Within this machine's noise at times.
 */
export const SEGMENT_READ_BYTES = 1024 * 1024
/**
 * Bytes of one xxh64 state. init64 does not clear all of them (xxhash-wasm's
 * create64 zeroes them first): a state is zeroed before every init64.
 */
export const XX_STATE_BYTES = 88
/** Where each thread's read buffer starts in its wasm memory: page-aligned (4K aliasing, see core/io-buffer.ts), past the state at 0. */
const WASM_BUF_OFFSET = 4096

// A worker thread hashing segments, kept between jobs. For each job it takes
// segment indexes from the shared counter until they run out, reading each
// straight into its own wasm memory (no copy from a JS buffer; xxhash-wasm's
// update() copies every byte once), from the caller's file descriptor
// (threads share it; pread needs no lock), then answers once.
// Plain ES2020 CommonJS, evaluated as-is; hashSegment below is its twin.
const SEGMENT_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { readSync } = require('node:fs')
const SEG = ${XXH64_SEGMENT_BYTES}, B = ${SEGMENT_READ_BYTES}, OFF = ${WASM_BUF_OFFSET}, XX_STATE = ${XX_STATE_BYTES}
const xx = new WebAssembly.Instance(workerData.module, {}).exports
if (xx.mem.buffer.byteLength < OFF + B) xx.mem.grow(Math.ceil((OFF + B - xx.mem.buffer.byteLength) / 65536))
const view = new Uint8Array(xx.mem.buffer, OFF, B)
const state = new Uint8Array(xx.mem.buffer, 0, XX_STATE)
parentPort.on('message', ({ fd, size, counter, n }) => {
  const ctr = new Int32Array(counter)
  const done = []
  try {
    for (let i; (i = Atomics.add(ctr, 0, 1)) < n;) {
      state.fill(0)
      xx.init64(0, 0n)
      let pos = i * SEG, got = 0
      const end = Math.min(size, pos + SEG)
      while (pos < end) {
        const r = readSync(fd, view, 0, Math.min(B, end - pos), pos)
        if (r === 0) break
        xx.update64(0, OFF, r)
        pos += r
        got += r
      }
      done.push([i, BigInt.asUintN(64, xx.digest64(0)).toString(16).padStart(16, '0'), got])
    }
    parentPort.postMessage({ done })
  } catch (e) {
    Atomics.store(ctr, 0, n)
    parentPort.postMessage({ done, error: { message: String((e && e.message) || e), code: e && e.code } })
  }
})
`

/** Segment workers kept between digests (the module is the same compiled xxhash-wasm every time). */
let segmentWorkers: IdleWorkers | undefined
const segmentPool = (module: unknown): IdleWorkers =>
  (segmentWorkers ??= new IdleWorkers(() => new Worker(SEGMENT_WORKER_SOURCE, { eval: true, workerData: { module } })))

/**
 * Starts segment workers now, parked idle, so that a fast digest asked for
 * soon after does not wait ~30–40 ms for a worker's start-up (a new V8
 * isolate). Up to `count` idle workers in all; ended like any idle worker
 * after IDLE_WORKER_MS (agent/idle-workers), and never keeping the process alive.
 */
export const prewarmXxh64Workers = async (count: number): Promise<void> => {
  segmentPool(await xxhWasmModule()).prewarm(Math.min(count, MAX_DEFAULT_XXH64_THREADS))
}

/** How many segment workers are idle, waiting for a job. */
export const idleXxh64Workers = (): number => segmentWorkers?.size ?? 0

/** Ends the idle segment workers now (they would end on their own after IDLE_WORKER_MS). */
export const endIdleXxh64Workers = async (): Promise<void> => {
  await segmentWorkers?.end()
}

/**
 * Starts, parked, the workers a re-verification in `mode` hashes on: the fast
 * digest's segment workers or strong verification's sha256 workers
 * (manifest/hash-pool), one per core, or one fewer with `callerHashes` (the
 * calling thread hashes too: {@link xxh64Segments} without `offThread`,
 * {@link hashRangesWithCaller}).
 */
export const prewarmVerifyWorkers = async (mode: 'fast' | 'strong', opts: { callerHashes?: boolean } = {}): Promise<void> =>
  mode === 'strong' ? prewarmHashWorkers(defaultHashWorkers(opts.callerHashes)) : prewarmXxh64Workers(defaultXxh64Threads() - (opts.callerHashes ? 1 : 0))

/** Ends the idle workers of both kinds of re-verification now. */
export const endIdleVerifyWorkers = async (): Promise<void> => {
  await Promise.all([endIdleXxh64Workers(), endIdleHashWorkers()])
}

interface XxhThread {
  xx: XxhRaw
  /** The read buffer, at WASM_BUF_OFFSET in xx.mem. */
  view: Uint8Array
  /** The state, at 0 in xx.mem. */
  state: Uint8Array
}

let mainXx: XxhThread | undefined

/** This thread's own instance of the module, with a page-aligned read buffer in its memory. */
const mainInstance = (module: unknown): XxhThread => {
  if (!mainXx) {
    const Wasm = (globalThis as unknown as { WebAssembly: { Instance: new (m: unknown, imports: object) => { exports: unknown } } }).WebAssembly
    const xx = new Wasm.Instance(module, {}).exports as XxhRaw
    const need = WASM_BUF_OFFSET + SEGMENT_READ_BYTES
    if (xx.mem.buffer.byteLength < need) xx.mem.grow(Math.ceil((need - xx.mem.buffer.byteLength) / 65536))
    mainXx = { xx, view: new Uint8Array(xx.mem.buffer, WASM_BUF_OFFSET, SEGMENT_READ_BYTES), state: new Uint8Array(xx.mem.buffer, 0, XX_STATE_BYTES) }
  }
  return mainXx
}

/** xxh64 of segment `i` of the file open at `fd` (the worker's loop body, on this thread). */
const hashSegment = (m: XxhThread, fd: number, size: number, i: number): { hex: string; bytes: number } => {
  const { xx, view, state } = m
  state.fill(0)
  xx.init64(0, 0n)
  let pos = i * XXH64_SEGMENT_BYTES
  let got = 0
  const end = Math.min(size, pos + XXH64_SEGMENT_BYTES)
  while (pos < end) {
    const r = readSync(fd, view, 0, Math.min(view.length, end - pos), pos)
    if (r === 0) break // file shorter than its stat: the caller compares sizes
    xx.update64(0, WASM_BUF_OFFSET, r)
    pos += r
    got += r
  }
  return { hex: xxh64Hex(BigInt.asUintN(64, xx.digest64(0))), bytes: got }
}

/**
 * Default cap on the threads hashing segments: a worker costs ~10 MB and
 * 30–140 ms of start-up, and a handful of threads (~5.5 GB/s each) already
 * reach the memory or disk bandwidth of a large node; a 128-core node should
 * not start 127 workers in its initramfs.
 */
export const MAX_DEFAULT_XXH64_THREADS = 8

/** The threads a fast digest uses by default: one per core, at most {@link MAX_DEFAULT_XXH64_THREADS}. */
export const defaultXxh64Threads = (): number => Math.min(availableParallelism(), MAX_DEFAULT_XXH64_THREADS)

export interface XxhSegmentsOptions {
  signal?: AbortSignal
  /**
   * Threads hashing, this one included; default os.availableParallelism(),
   * at most {@link MAX_DEFAULT_XXH64_THREADS}. 1: this thread only.
   */
  threads?: number
  /**
   * Hash on `threads` workers only and leave this thread's event loop free
   * (then even one segment gets a worker). Default false.
   */
  offThread?: boolean
}

/**
 * xxh64 (seed 0) of each {@link XXH64_SEGMENT_BYTES} segment of a file (the
 * cache's fast digest, meta.ts), the number of bytes read (less than the
 * file's size only if it shrank meanwhile) and the number of threads used.
 *
 * This thread and `threads − 1` workers take segments from a shared counter
 * and read them with synchronous 1 MiB reads straight into their wasm
 * memory. Measured here from the page cache: one thread spends ~95 ms per GiB
 * in read() and ~95 ms in xxh64 (~5.5 GB/s, below native `xxhsum -H1`); two
 * threads hash 2 GiB in 230–280 ms. This thread yields to the event loop
 * after each segment (10–20 ms) and stops there when `signal` is aborted;
 * concurrent calls share its wasm instance safely (a segment is hashed from
 * init to digest without yielding). A file of one segment is hashed here
 * without a worker. Workers are kept for the next call (IDLE_WORKER_MS).
 */
export const xxh64Segments = async (path: string, opts: XxhSegmentsOptions = {}): Promise<{ xxh64: string[]; size: number; threads: number }> => {
  throwIfAborted(opts.signal)
  const threads = opts.threads ?? defaultXxh64Threads()
  if (!Number.isSafeInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`)
  const module = await xxhWasmModule()
  const fd = openSync(path, 'r')
  const workers: Worker[] = []
  const answered: Promise<void>[] = []
  const counter = new Int32Array(new SharedArrayBuffer(4))
  let n = 0
  try {
    const { size } = fstatSync(fd)
    n = segmentCount(size)
    const digests = new Array<string>(n).fill('')
    const bytes = new Array<number>(n).fill(0)
    let failure: unknown
    const nWorkers = opts.offThread ? Math.min(threads, n) : Math.min(threads - 1, n - 1)
    for (let k = 0; k < nWorkers; k++) {
      const w = segmentPool(module).take()
      workers.push(w)
      answered.push(
        new Promise<void>((resolve) => {
          const settle = (f?: unknown): void => {
            w.off('message', onMessage)
            w.off('error', onError)
            w.off('exit', onExit)
            if (f !== undefined) failure ??= f
            resolve()
          }
          const onMessage = (m: { done: [number, string, number][]; error?: { message: string; code?: string } }): void => {
            for (const [i, hex, b] of m.done) {
              digests[i] = hex
              bytes[i] = b
            }
            if (m.error) {
              void w.terminate()
              settle(new BootAgentError('EHASHIO', `hashing ${path}: ${m.error.message}`, { path, errno: m.error.code }))
            } else {
              segmentPool(module).park(w)
              settle()
            }
          }
          const onError = (e: Error): void => settle(new BootAgentError('EUNEXPECTED', `xxh64 worker failed: ${e.message}`, { path }, { cause: e }))
          const onExit = (code: number): void => settle(new BootAgentError('EUNEXPECTED', `xxh64 worker exited (${code}) before answering`, { path }))
          w.on('message', onMessage)
          w.on('error', onError)
          w.on('exit', onExit)
        }),
      )
      w.postMessage({ fd, size, counter: counter.buffer, n })
    }
    const mine = opts.offThread ? undefined : mainInstance(module)
    while (mine && failure === undefined) {
      const i = Atomics.add(counter, 0, 1)
      if (i >= n) break
      const r = hashSegment(mine, fd, size, i)
      digests[i] = r.hex
      bytes[i] = r.bytes
      await new Promise<void>((r) => setImmediate(r))
      if (opts.signal?.aborted) {
        Atomics.store(counter, 0, n) // the workers stop after their current segment
        throwIfAborted(opts.signal)
      }
    }
    if (opts.signal && !opts.signal.aborted && answered.length) {
      // Waiting on the workers only: stop them at their next segment if aborted meanwhile.
      const stop = () => Atomics.store(counter, 0, n)
      opts.signal.addEventListener('abort', stop, { once: true })
      await Promise.all(answered).finally(() => opts.signal!.removeEventListener('abort', stop))
    } else {
      await Promise.all(answered)
    }
    if (failure !== undefined) throw failure
    throwIfAborted(opts.signal)
    return { xxh64: digests, size: bytes.reduce((a, b) => a + b, 0), threads: (mine ? 1 : 0) + workers.length }
  } finally {
    // A worker may still be reading from fd: it must have answered (or died) before fd is closed (and its number reused).
    Atomics.store(counter, 0, n)
    await Promise.all(answered)
    closeSync(fd)
  }
}

/**
 * Hashes byte ranges of a file with sha256, returning one hex digest per
 * range. The default runs on this thread; a worker pool can be plugged in
 * (manifest/hash-pool) to hash ranges in parallel.
 */
export type RangeHasher = (path: string, ranges: ReadonlyArray<{ offset: number; size: number }>, opts?: { signal?: AbortSignal }) => Promise<string[]>

/** sha256 per range on the calling thread, reading runs of adjacent ranges with large pipelined reads. */
export const hashRangesInline: RangeHasher = async (path, ranges, opts = {}) => {
  const out: string[] = new Array<string>(ranges.length)
  const fh = await open(path, 'r')
  try {
    let i = 0
    while (i < ranges.length) {
      // A run of adjacent ranges is read as one stream.
      let j = i
      while (j + 1 < ranges.length && ranges[j + 1]!.offset === ranges[j]!.offset + ranges[j]!.size) j++
      const runStart = ranges[i]!.offset
      const runEnd = ranges[j]!.offset + ranges[j]!.size
      let k = i
      let h = createHash('sha256')
      let left = ranges[k]!.size
      await readPipelined(fh, runStart, runEnd - runStart, (piece) => {
        let p = 0
        while (p < piece.length && k <= j) {
          const take = Math.min(left, piece.length - p)
          h.update(piece.subarray(p, p + take))
          p += take
          left -= take
          if (left === 0) {
            out[k] = h.digest('hex')
            k++
            if (k <= j) {
              h = createHash('sha256')
              left = ranges[k]!.size
            }
          }
        }
      }, opts)
      // A short file leaves the rest unhashed: report them as the digest of nothing read.
      for (; k <= j; k++) if (out[k] === undefined) out[k] = ''
      i = j + 1
    }
  } finally {
    await fh.close()
  }
  return out
}

const parallelHasher = (callerHashes: boolean): RangeHasher => async (path, ranges, opts = {}) => {
  try {
    return await hashRanges(path, ranges, { ...(opts.signal ? { signal: opts.signal } : {}), callerHashes })
  } catch (e) {
    if (isErrno(e, 'EBADSIZE')) return hashRangesInline(path, ranges, opts)
    throw e
  }
}

/**
 * sha256 per range on worker threads (manifest/hash-pool: one per core, large
 * reads); a file shorter than the ranges (a truncated object) falls back to
 * the inline hasher, which reports the missing ranges as unmatched.
 */
export const hashRangesParallel: RangeHasher = parallelHasher(false)

/**
 * {@link hashRangesParallel} with the calling thread hashing too, on one
 * worker fewer (hash-pool `callerHashes`): for a caller with nothing else to
 * do meanwhile, such as `boot-agent verify --strong`.
 */
export const hashRangesWithCaller: RangeHasher = parallelHasher(true)

/** Indexes of the chunks whose bytes in `path` do not match their sha256. */
export const badChunks = async (path: string, chunks: readonly Chunk[], opts: { signal?: AbortSignal; hasher?: RangeHasher } = {}): Promise<number[]> => {
  const hasher = opts.hasher ?? hashRangesParallel
  const got = await hasher(path, chunks, opts.signal ? { signal: opts.signal } : {})
  return chunks.filter((c, i) => got[i] !== c.sha256).map((c) => c.index)
}
