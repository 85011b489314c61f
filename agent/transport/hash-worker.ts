/**
 * The download's sha256 work on a worker thread, so the JS thread only
 * receives, copies and writes (sha256 on the receive thread held downloads
 * to ~0.35× of `curl -o && sync`; notes/performance.md).
 *
 * The worker verifies each completed chunk (sha256 against the manifest) and
 * keeps the whole-image sha256: a verified chunk that is next in image order
 * is fed to it in the same pass; bytes that arrived out of order are fed
 * later from disk (`feed`). Chunks live in SharedArrayBuffer write buffers,
 * so nothing is copied to the worker; the caller must not reuse a buffer
 * region before its verdict (or feed acknowledgement) came back.
 *
 * Like manifest/hash-pool, the worker is a self-contained CommonJS string
 * started with `eval: true`, so it works inside the single-file bundle.
 */
import { Worker } from 'node:worker_threads'
import { BootAgentError } from '../errors.js'

// Plain ES2020 CommonJS, evaluated as-is.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const whole = createHash('sha256')
let next = 0
const views = new Map()
const view = (sab) => {
  let v = views.get(sab)
  if (!v) { v = Buffer.from(sab); views.set(sab, v) }
  return v
}
parentPort.on('message', (m) => {
  if (m.t === 'chunk') {
    const bytes = view(m.sab).subarray(m.off, m.off + m.len)
    const found = createHash('sha256').update(bytes).digest('hex')
    const ok = found === m.expected
    const fed = ok && m.i === next
    if (fed) { whole.update(bytes); next++ }
    parentPort.postMessage({ t: 'chunk', id: m.id, ok, found, fed })
  } else if (m.t === 'feed') {
    whole.update(view(m.sab).subarray(m.off, m.off + m.len))
    if (m.next !== undefined) next = m.next
    parentPort.postMessage({ t: 'feed', id: m.id })
  } else if (m.t === 'digest') {
    parentPort.postMessage({ t: 'digest', id: m.id, sha256: whole.digest('hex') })
  }
})
`

/** The verdict on one chunk. */
export interface ChunkVerdict {
  /** The bytes match the expected sha256. */
  ok: boolean
  /** Their sha256 (hex). */
  found: string
  /** They were fed to the whole-image sha256 (the chunk was next in image order). */
  fed: boolean
}

type Reply = { t: 'chunk'; id: number; ok: boolean; found: string; fed: boolean } | { t: 'feed'; id: number } | { t: 'digest'; id: number; sha256: string }

interface Waiting {
  resolve: (r: Reply) => void
  reject: (e: unknown) => void
  /** The chunk's index and bytes, for onFed. */
  chunk?: { index: number; bytes: Uint8Array }
}

/** One worker thread holding a download's sha256 state; replies come in the order of the requests. */
export class DownloadHasher {
  private readonly worker: Worker
  private readonly waiting = new Map<number, Waiting>()
  private nextId = 0
  private failed: unknown
  private closed = false

  /**
   * @param onFed called, synchronously and in image order, with the bytes of
   * each chunk the worker fed to the whole-image sha256 (the caller extends
   * its other in-order digests there).
   */
  constructor(private readonly onFed: (index: number, bytes: Uint8Array) => void) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true })
    this.worker.on('message', (r: Reply) => {
      const w = this.waiting.get(r.id)
      this.waiting.delete(r.id)
      if (!w) return
      if (r.t === 'chunk' && r.fed) {
        try {
          this.onFed(w.chunk!.index, w.chunk!.bytes)
        } catch (e) {
          w.reject(e)
          return
        }
      }
      w.resolve(r)
    })
    this.worker.on('error', (e) => this.die(new BootAgentError('EUNEXPECTED', `download hash worker failed: ${e.message}`, {}, { cause: e })))
    this.worker.on('exit', (code) => {
      if (!this.closed) this.die(new BootAgentError('EUNEXPECTED', `download hash worker exited (${code})`))
    })
    // Not unref'd: a pending reply must keep the process alive (Download.run always closes it).
  }

  private die(e: unknown): void {
    this.failed ??= e
    for (const w of this.waiting.values()) w.reject(e)
    this.waiting.clear()
  }

  private ask(msg: Record<string, unknown>, chunk?: Waiting['chunk']): Promise<Reply> {
    if (this.failed !== undefined) return Promise.reject(this.failed)
    if (this.closed) return Promise.reject(new BootAgentError('EUNEXPECTED', 'download hash worker already closed'))
    const id = this.nextId++
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, ...(chunk ? { chunk } : {}) })
      this.worker.postMessage({ ...msg, id })
    })
  }

  /** Verifies chunk `index` (bytes `len` at `off` of `sab`) against `expected`; feeds it to the whole-image sha256 when it is next in order. */
  async chunk(index: number, sab: SharedArrayBuffer, off: number, len: number, expected: string): Promise<ChunkVerdict> {
    const r = await this.ask({ t: 'chunk', i: index, sab, off, len, expected }, { index, bytes: new Uint8Array(sab, off, len) })
    if (r.t !== 'chunk') throw new BootAgentError('EUNEXPECTED', `download hash worker answered ${r.t} to chunk`)
    return { ok: r.ok, found: r.found, fed: r.fed }
  }

  /** Feeds bytes (read back in image order) to the whole-image sha256; `nextChunk` is the chunk that follows them, once they end one. */
  async feed(sab: SharedArrayBuffer, off: number, len: number, nextChunk?: number): Promise<void> {
    await this.ask({ t: 'feed', sab, off, len, ...(nextChunk !== undefined ? { next: nextChunk } : {}) })
  }

  /** The whole-image sha256 (hex); the hasher cannot be fed afterwards. */
  async digest(): Promise<string> {
    const r = await this.ask({ t: 'digest' })
    if (r.t !== 'digest') throw new BootAgentError('EUNEXPECTED', `download hash worker answered ${r.t} to digest`)
    return r.sha256
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.die(new BootAgentError('EABORT', 'download hash worker closed'))
    await this.worker.terminate()
  }
}
