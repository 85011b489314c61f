/**
 * The one pool of hashing worker threads. The manifest builder's and strong
 * verification's sha256 of byte ranges (hash/ranges.ts) and the fast
 * digest's xxh64 per segment (hash/segments.ts) are the same job: digests of
 * byte ranges of one file, read with large synchronous reads on every core.
 * They run on the same workers, kept between calls (hash/idle-workers.ts), so
 * a strong verify after a fast one starts no new thread. The download's two
 * hash workers are not pooled: hash/download-hasher.ts says why.
 *
 * The worker is a small self-contained CommonJS source string started with
 * `new Worker(code, { eval: true })`, so it works unchanged inside the
 * bundle in the initramfs (no worker file to ship); the jobs it runs are
 * hash/jobs.ts's functions, whose source the string carries.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { IdleWorkers } from './idle-workers.js'
import { SEGMENT_READ_BYTES, WASM_BUF_OFFSET, hashJob, xxh64Segment, xxhThread } from './jobs.js'
import { XX_STATE_BYTES } from './xxh.js'
import { XXH64_SEGMENT_BYTES } from './xxh64-format.js'

// Plain ES2020 CommonJS around hash/jobs.ts's functions, evaluated as-is. Messages in:
//   { t: 'sha256', id, path, offsets, sizes, spanEnd, bufferSize }: one job of ranges;
//     answered { id, digests } (32 bytes per range, one transferred buffer) or { id, error }.
//   { t: 'xxh', module }: xxhash-wasm's compiled module (or workerData.xxhModule at the start).
//   { t: 'xxh64', fd, size, counter, n }: takes segment indexes from the shared counter
//     until they run out, reading from the caller's file descriptor (threads share
//     it; pread needs no lock); answered once, { done: [index, hex, bytes][], error? }.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const fs = require('node:fs')
const crypto = require('node:crypto')
const hashJob = ${hashJob.toString()}
const xxhThread = ${xxhThread.toString()}
const xxh64Segment = ${xxh64Segment.toString()}
const SEG = ${XXH64_SEGMENT_BYTES}
const withXxh = (module) => xxhThread(module, ${WASM_BUF_OFFSET}, ${SEGMENT_READ_BYTES}, ${XX_STATE_BYTES})
let xx = workerData && workerData.xxhModule ? withXxh(workerData.xxhModule) : null
let buf = null
const errorOf = (e) => ({ message: String((e && e.message) || e), code: e && e.code })
parentPort.on('message', (m) => {
  if (m.t === 'sha256') {
    try {
      // Page-aligned (a WebAssembly.Memory; see core/io-buffer.ts: 4K aliasing).
      if (!buf || buf.length < m.bufferSize) {
        const pages = Math.ceil(m.bufferSize / 65536)
        buf = Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, m.bufferSize)
      }
      const out = hashJob(m, buf, fs, crypto)
      parentPort.postMessage({ id: m.id, digests: out }, [out.buffer])
    } catch (e) {
      parentPort.postMessage({ id: m.id, error: errorOf(e) })
    }
  } else if (m.t === 'xxh') {
    xx = withXxh(m.module)
  } else if (m.t === 'xxh64') {
    const ctr = new Int32Array(m.counter)
    const done = []
    try {
      for (let i; (i = Atomics.add(ctr, 0, 1)) < m.n;) {
        const r = xxh64Segment(xx, m.fd, m.size, i, SEG, fs.readSync)
        done.push([i, r.hex, r.bytes])
      }
      parentPort.postMessage({ done })
    } catch (e) {
      Atomics.store(ctr, 0, m.n)
      parentPort.postMessage({ done, error: errorOf(e) })
    }
  }
})
`

/** xxhash-wasm's compiled module once a caller has passed one (the same every time): given to each worker started after. */
let xxhModule: unknown
/** The workers that have instantiated xxhModule. */
const withXxhModule = new WeakSet<Worker>()

const pool = new IdleWorkers(() => {
  const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { xxhModule } })
  if (xxhModule !== undefined) withXxhModule.add(w)
  return w
})

/** The workers sha256 hashing uses by default: one per core, one fewer when the calling thread hashes too. */
export const defaultHashWorkers = (callerHashes = false): number => availableParallelism() - (callerHashes ? 1 : 0)

/**
 * Starts hash workers now, parked idle, until `count` are idle (default one
 * per core), so that hashing asked for soon after (a verify, once the
 * metadata is read) does not wait ~30–140 ms for a worker's start-up (a new V8
 * isolate). With `xxhModule` (hash/xxh xxhWasmModule), the new ones
 * instantiate it as they start, ready for xxh64.
 */
export const prewarmHashWorkers = (count = defaultHashWorkers(), opts: { xxhModule?: unknown } = {}): void => {
  if (opts.xxhModule !== undefined) xxhModule = opts.xxhModule
  pool.prewarm(count)
}

/**
 * An idle worker (or a new one) for one call's jobs, to hand back with
 * {@link parkHashWorker} once it has answered them all, or to terminate.
 * With `xxhModule`, it has the module before the call's first message.
 */
export const takeHashWorker = (opts: { xxhModule?: unknown } = {}): Worker => {
  if (opts.xxhModule !== undefined) xxhModule = opts.xxhModule
  const w = pool.take()
  if (opts.xxhModule !== undefined && !withXxhModule.has(w)) {
    w.postMessage({ t: 'xxh', module: opts.xxhModule })
    withXxhModule.add(w)
  }
  return w
}

/** Keeps a worker that has answered every job of its call, for the next call. */
export const parkHashWorker = (w: Worker): void => pool.park(w)

/** How many hash workers are idle, waiting for a job. */
export const idleHashWorkers = (): number => pool.size

/** Ends the idle hash workers now (they would end on their own after IDLE_WORKER_MS). */
export const endIdleHashWorkers = (): Promise<void> => pool.end()
