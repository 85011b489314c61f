/**
 * The cache's fast digest: xxh64 (seed 0) of each 64 MiB segment of a file
 * (hash/xxh64-format.ts, the format cache/meta.ts stores), on this
 * thread and the hash pool's workers (hash/pool.ts) at disk speed: large
 * page-aligned reads straight into each thread's wasm memory.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import type { Worker } from 'node:worker_threads'
import { BootAgentError } from '../core/errors.js'
import { SEGMENT_READ_BYTES, WASM_BUF_OFFSET, xxh64Segment, xxhThread, type XxhThread } from './jobs.js'
import { parkHashWorker, prewarmHashWorkers, takeHashWorker } from './pool.js'
import { XX_STATE_BYTES, xxhWasmModule } from './xxh.js'
import { XXH64_SEGMENT_BYTES, segmentCount } from './xxh64-format.js'

const throwIfAborted = (signal?: AbortSignal): void => {
  if (signal?.aborted) throw signal.reason ?? new BootAgentError('EABORT', 'aborted')
}

/**
 * Starts hash workers now, parked idle, with xxhash-wasm instantiated, so
 * that a fast digest asked for soon after does not wait ~30–40 ms for a
 * worker's start-up (a new V8 isolate). Up to `count` idle workers in all (at
 * most {@link MAX_DEFAULT_XXH64_THREADS}); ended like any idle worker after
 * IDLE_WORKER_MS (hash/idle-workers), and never keeping the process alive.
 */
export const prewarmXxh64Workers = async (count: number): Promise<void> => {
  prewarmHashWorkers(Math.min(count, MAX_DEFAULT_XXH64_THREADS), { xxhModule: await xxhWasmModule() })
}

let mainXx: XxhThread | undefined

/** This thread's own instance of the module, with a page-aligned read buffer in its memory. */
const mainInstance = (module: unknown): XxhThread => (mainXx ??= xxhThread(module, WASM_BUF_OFFSET, SEGMENT_READ_BYTES, XX_STATE_BYTES))

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
      const w = takeHashWorker({ xxhModule: module })
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
              parkHashWorker(w)
              settle()
            }
          }
          const onError = (e: Error): void => settle(new BootAgentError('EWORKER', `xxh64 worker failed: ${e.message}`, { path }, { cause: e }))
          const onExit = (code: number): void => settle(new BootAgentError('EWORKER', `xxh64 worker exited (${code}) before answering`, { path }))
          w.on('message', onMessage)
          w.on('error', onError)
          w.on('exit', onExit)
        }),
      )
      w.postMessage({ t: 'xxh64', fd, size, counter: counter.buffer, n })
    }
    const mine = opts.offThread ? undefined : mainInstance(module)
    while (mine && failure === undefined) {
      const i = Atomics.add(counter, 0, 1)
      if (i >= n) break
      const r = xxh64Segment(mine, fd, size, i, XXH64_SEGMENT_BYTES, readSync)
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

