/**
 * The download's sha256 work on a worker thread, so the JS thread only
 * receives, copies and writes (sha256 on the receive thread held downloads
 * to ~0.35× of `curl -o && sync`; notes/performance.md).
 *
 * Not the hash pool (hash/pool.ts), on purpose: the pool's jobs are
 * stateless (a file's ranges in, their digests out, any worker will do),
 * while these two workers hold one download's state for its whole life — the
 * whole-image sha256 and the current xxh64 segment, fed strictly in image
 * order over a port between them, from the caller's SharedArrayBuffer write
 * buffers. They are started for one download and ended with it; a pooled
 * worker would have to be reset and re-wired to a new port for each one.
 *
 * Two workers: one verifies each completed chunk (sha256 against the
 * manifest), the other keeps the whole-image digests. A verified chunk that
 * is next in image order is passed from the first to the second right after
 * the verdicts are sent, so the caller's write, the next buffer's chunk
 * hashing and this feeding all overlap (one worker doing both was the
 * download's bottleneck: ~4 CPU-s of sha256 per 2 GiB on one thread); bytes
 * that arrived out of order are fed later from disk (`feed`, passed through
 * the first worker so the order holds). Chunks live in SharedArrayBuffer
 * write buffers, so nothing is copied to the workers; the caller must not
 * reuse a buffer region before `released` (or the feed acknowledgement)
 * settled.
 *
 * The image's xxh64 per 64 MiB segment (the cache's fast re-verification
 * digest, hash/xxh64-format.ts XXH64_SEGMENT_BYTES) is kept there too, with
 * xxhash-wasm's own compiled module (hash/xxh xxhWasmModule): the state is
 * digested and reset at every segment boundary of the image.
 *
 * Like the pool's, each worker is a self-contained CommonJS string started
 * with `eval: true`, so it works inside the single-file bundle.
 */
import { MessageChannel, Worker } from 'node:worker_threads'
import { BootAgentError } from '../core/errors.js'
import { XX_STATE_BYTES } from './xxh.js'
import { XXH64_SEGMENT_BYTES } from './xxh64-format.js'

// Plain ES2020 CommonJS, evaluated as-is.
// The whole-image digests (sha256 and xxh64 per segment), fed strictly in image
// order: by the chunk worker (in-order verified chunks, read-back bytes) over
// its port; it answers the caller ('released', 'feed', 'digest') directly.
const WHOLE_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const whole = createHash('sha256')
const views = []
// xxh64 with xxhash-wasm's module: a private instance, its one state at 0, input copied in after the first page.
let xx = null
const XX_STATE = ${XX_STATE_BYTES}
const SEG = ${XXH64_SEGMENT_BYTES}
// Digests of the finished segments, and bytes fed to the current one.
const segments = []
let segFill = 0
const xxInit = () => {
  new Uint8Array(xx.mem.buffer, 0, XX_STATE).fill(0) // init64 alone does not clear the whole state
  xx.init64(0, 0n)
}
const xxDigest = () => BigInt.asUintN(64, xx.digest64(0)).toString(16).padStart(16, '0')
// The copy lands at the source's offset within a page: a copy between
// addresses 88 bytes apart modulo 4096 ran at ~1 GB/s here (4K aliasing),
// an aligned one ~10x faster. The write buffers are page-aligned.
const xxUpdate = (bytes) => {
  const at = 4096 + (bytes.byteOffset & 4095)
  const need = at + bytes.length
  if (xx.mem.buffer.byteLength < need) xx.mem.grow(Math.ceil((need - xx.mem.buffer.byteLength) / 65536))
  new Uint8Array(xx.mem.buffer).set(bytes, at)
  xx.update64(0, at, bytes.length)
}
const xxFeed = (bytes) => {
  let p = 0
  while (p < bytes.length) {
    const take = Math.min(bytes.length - p, SEG - segFill)
    xxUpdate(bytes.subarray(p, p + take))
    segFill += take
    p += take
    if (segFill === SEG) {
      segments.push(xxDigest())
      xxInit()
      segFill = 0
    }
  }
}
const feedWhole = (bytes) => {
  whole.update(bytes)
  xxFeed(bytes)
}
parentPort.on('message', (m) => {
  if (m.t === 'init') {
    xx = new WebAssembly.Instance(m.xxhModule, {}).exports
    xxInit()
    m.port.on('message', (f) => {
      if (f.t === 'buf') {
        views[f.key] = Buffer.from(f.sab)
      } else if (f.t === 'fed') {
        // In-order verified chunks of a buffer: the caller may reuse it once they are in.
        const v = views[f.key]
        for (let k = 0; k < f.off.length; k++) feedWhole(v.subarray(f.off[k], f.off[k] + f.len[k]))
        parentPort.postMessage({ t: 'released', id: f.id })
      } else if (f.t === 'feed') {
        feedWhole(views[f.key].subarray(f.off, f.off + f.len))
        parentPort.postMessage({ t: 'feed', id: f.id })
      } else if (f.t === 'digest') {
        if (segFill > 0) segments.push(xxDigest()) // the last, shorter segment
        parentPort.postMessage({ t: 'digest', id: f.id, sha256: whole.digest('hex'), xxh64: segments })
      }
    })
  }
})
`

// Each chunk's sha256 against the manifest; the verdicts go to the caller at
// once and the in-order good chunks on to the whole-image worker, with the
// caller's 'feed' and 'digest' requests in the same order.
const CHUNK_SOURCE = `
const { parentPort } = require('node:worker_threads')
const crypto = require('node:crypto')
// One-shot crypto.hash (Node >= 20.12): no Hash object per chunk (hash/jobs.ts hashJob).
const sha256Hex = typeof crypto.hash === 'function'
  ? (bytes) => crypto.hash('sha256', bytes)
  : (bytes) => crypto.createHash('sha256').update(bytes).digest('hex')
let next = 0
let whole = null
const views = []
parentPort.on('message', (m) => {
  if (m.t === 'init') {
    whole = m.port
  } else if (m.t === 'buf') {
    views[m.key] = Buffer.from(m.sab)
    whole.postMessage(m)
  } else if (m.t === 'chunks') {
    const v = views[m.key]
    const found = []
    const fed = []
    const off = []
    const len = []
    for (let k = 0; k < m.index.length; k++) {
      const bytes = v.subarray(m.off[k], m.off[k] + m.len[k])
      found.push(sha256Hex(bytes))
      const f = found[k] === m.expected[k] && m.index[k] === next
      if (f) { off.push(m.off[k]); len.push(m.len[k]); next++ }
      fed.push(f)
    }
    parentPort.postMessage({ t: 'chunks', id: m.id, found, fed })
    whole.postMessage({ t: 'fed', id: m.id, key: m.key, off, len })
  } else if (m.t === 'feed') {
    if (m.next !== undefined) next = m.next
    whole.postMessage(m)
  } else if (m.t === 'digest') {
    whole.postMessage(m)
  }
})
`

/** A received chunk to verify: its index, where its bytes are in the buffer, and its expected sha256. */
export interface ChunkToVerify {
  index: number
  off: number
  len: number
  expected: string
}

type Reply =
  | { t: 'chunks'; id: number; found: string[]; fed: boolean[] }
  | { t: 'released'; id: number }
  | { t: 'feed'; id: number }
  | { t: 'digest'; id: number; sha256: string; xxh64: string[] }

/** The verdicts on a buffer's chunks, and when the workers are done reading the buffer. */
export interface ChunkVerdicts {
  /** sha256 (hex) found for each chunk asked about. */
  found: string[]
  /** Settles once the workers no longer read the buffer (after the in-order chunks were fed to the digests). */
  released: Promise<void>
}

interface Waiting {
  resolve: (r: Reply) => void
  reject: (e: unknown) => void
  /** The chunks asked about, for onFed. */
  chunks?: { sab: SharedArrayBuffer; items: readonly ChunkToVerify[] }
}

/** Two worker threads holding a download's digests; replies of each kind come in the order of the requests. */
export class DownloadHasher {
  /** Verifies chunks; passes 'buf', 'feed', 'digest' and the in-order chunks on to `whole`. */
  private readonly worker: Worker
  /** The whole-image digests; answers 'released', 'feed', 'digest'. */
  private readonly whole: Worker
  private readonly waiting = new Map<number, Waiting>()
  /** 'chunks' requests answered whose buffer the whole-image worker still reads. */
  private readonly releases = new Map<number, { resolve: () => void; reject: (e: unknown) => void }>()
  private nextId = 0
  /** Buffers the workers have a view of (a SharedArrayBuffer in a message costs ~0.15 ms: sent once, then named by key). */
  private readonly keys = new Map<SharedArrayBuffer, number>()
  private failed: unknown
  private closed = false

  /**
   * @param xxhModule xxhash-wasm's WebAssembly.Module (xxhWasmModule()).
   * @param onFed called, synchronously and in image order, with each chunk
   * the workers feed to the whole-image digests, when its verdict arrives:
   * the feeding may still be under way then, but it is finished before any
   * later request (`feed`, `digest`) is handled.
   */
  constructor(
    xxhModule: unknown,
    private readonly onFed: (index: number, bytes: Uint8Array) => void,
  ) {
    const { port1, port2 } = new MessageChannel()
    this.whole = new Worker(WHOLE_SOURCE, { eval: true })
    this.whole.postMessage({ t: 'init', xxhModule, port: port2 }, [port2])
    this.worker = new Worker(CHUNK_SOURCE, { eval: true })
    this.worker.postMessage({ t: 'init', port: port1 }, [port1])
    const onReply = (r: Reply): void => {
      if (r.t === 'released') {
        this.releases.get(r.id)?.resolve()
        this.releases.delete(r.id)
        return
      }
      const w = this.waiting.get(r.id)
      this.waiting.delete(r.id)
      if (!w) return
      if (r.t === 'chunks') {
        try {
          r.fed.forEach((fed, k) => {
            const c = w.chunks!.items[k]!
            if (fed) this.onFed(c.index, new Uint8Array(w.chunks!.sab, c.off, c.len))
          })
        } catch (e) {
          w.reject(e)
          return
        }
      }
      w.resolve(r)
    }
    for (const w of [this.worker, this.whole]) {
      w.on('message', onReply)
      w.on('error', (e) => this.die(new BootAgentError('EWORKER', `download hash worker failed: ${e.message}`, {}, { cause: e })))
      w.on('exit', (code) => {
        if (!this.closed) this.die(new BootAgentError('EWORKER', `download hash worker exited (${code})`))
      })
    }
    // Not unref'd: a pending reply must keep the process alive (Download.run always closes it).
  }

  private die(e: unknown): void {
    this.failed ??= e
    for (const w of this.waiting.values()) w.reject(e)
    this.waiting.clear()
    for (const r of this.releases.values()) r.reject(e)
    this.releases.clear()
  }

  private keyOf(sab: SharedArrayBuffer): number {
    let key = this.keys.get(sab)
    if (key === undefined) {
      key = this.keys.size
      this.keys.set(sab, key)
      this.worker.postMessage({ t: 'buf', key, sab })
    }
    return key
  }

  private ask(msg: Record<string, unknown>, chunks?: Waiting['chunks']): Promise<Reply> {
    if (this.failed !== undefined) return Promise.reject(this.failed)
    if (this.closed) return Promise.reject(new BootAgentError('EWORKER', 'download hash worker already closed'))
    const id = this.nextId++
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, ...(chunks ? { chunks } : {}) })
      this.worker.postMessage({ ...msg, id })
    })
  }

  /**
   * Verifies chunks held in `sab` (one message for a whole write buffer:
   * messages cost more than hashing a small chunk) and returns the sha256
   * (hex) found for each; each one that matches and is next in image order
   * is fed to the whole-image sha256 (and reported to onFed).
   */
  async chunks(sab: SharedArrayBuffer, items: readonly ChunkToVerify[]): Promise<ChunkVerdicts> {
    if (!items.length) return { found: [], released: Promise.resolve() }
    const id = this.nextId // the id ask() gives this request
    const released = new Promise<void>((resolve, reject) => this.releases.set(id, { resolve, reject }))
    released.catch(() => undefined) // also rejected when the verdicts are: the caller may await only those
    let r: Reply
    try {
      r = await this.ask(
        { t: 'chunks', key: this.keyOf(sab), index: items.map((c) => c.index), off: items.map((c) => c.off), len: items.map((c) => c.len), expected: items.map((c) => c.expected) },
        { sab, items },
      )
    } catch (e) {
      // Refused before it was sent, or a worker failed: nothing reads the buffer now.
      this.releases.get(id)?.resolve()
      this.releases.delete(id)
      throw e
    }
    if (r.t !== 'chunks') throw new BootAgentError('EWORKER', `download hash worker answered ${r.t} to chunks`)
    return { found: r.found, released }
  }

  /** Feeds bytes (read back in image order) to the whole-image sha256; `nextChunk` is the chunk that follows them, once they end one. */
  async feed(sab: SharedArrayBuffer, off: number, len: number, nextChunk?: number): Promise<void> {
    await this.ask({ t: 'feed', key: this.keyOf(sab), off, len, ...(nextChunk !== undefined ? { next: nextChunk } : {}) })
  }

  /**
   * The whole-image sha256 and the xxh64 of each 64 MiB segment (hex, none for
   * an empty image); the hasher cannot be fed afterwards.
   */
  async digest(): Promise<{ sha256: string; xxh64: string[] }> {
    const r = await this.ask({ t: 'digest' })
    if (r.t !== 'digest') throw new BootAgentError('EWORKER', `download hash worker answered ${r.t} to digest`)
    return { sha256: r.sha256, xxh64: r.xxh64 }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.die(new BootAgentError('EABORT', 'download hash worker closed'))
    await Promise.all([this.worker.terminate(), this.whole.terminate()])
  }
}
