/**
 * Chunk writing: received chunks gathered in large shared write buffers,
 * verified in batches (on the hash worker, through a hook), and the
 * verified ones written with single large writes (through another hook).
 * The download reads the network straight into these buffers
 * ({@link receiveChunks}); delta reuse adds chunks from memory.
 */
import type { Chunk } from '../manifest/types.js'
import { BootAgentError } from '../core/errors.js'
import { ioBuffer } from '../core/io-buffer.js'
import { DIRECT_ALIGN } from './disk-writer.js'
import { chunkAt } from './plan.js'

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

/** Size of each stream's write buffer (large writes: notes/performance.md). */
export const WRITE_BUFFER_BYTES = 4 * 1024 * 1024
/**
 * Write buffers per stream: one fills while the others are verified (on the
 * hash worker) and written; with two, the receive waited for each buffer's
 * verify + write in turn.
 */
export const WRITE_BUFFERS = 4

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
  /** Milliseconds the receive waited for a buffer's earlier verify-and-write (hashing or disk behind the network). */
  waitedMs = 0

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
    if (this.pending !== n) throw new BootAgentError('EINTERNAL', `internal: discarding ${n} bytes with ${this.pending} pending`)
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
    if (this.lead + carryLen > this.buf.length) throw new BootAgentError('EINTERNAL', `internal: ${carryLen} pending bytes do not fit a write buffer`)
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
    if (!p) return
    const t = performance.now()
    try {
      await p
    } finally {
      this.waitedMs += performance.now() - t
    }
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

/** A response body read into memory the caller gives (direct-http.ts; node-fetch through pieceReader). */
export interface BodySource {
  /** Reads into `into`; 0 at the end of the body. */
  read(into: Uint8Array): Promise<number>
}

export interface ReceiveOptions {
  chunks: readonly Chunk[]
  /**
   * The file offset reached: on entry the body's first byte (a chunk
   * boundary), kept up to date while receiving (the caller says where a
   * stream broke).
   */
  at: { pos: number }
  /** Receive up to here: the end of the last chunk wanted. */
  stopAt: number
  /** Whether chunk i is kept (verified and written) or its bytes discarded. */
  collect: (i: number) => boolean
  /** Where the bytes come from (for integrity errors). */
  from: string
  /** After each read: `n` bytes received, of a kept chunk or not. */
  onRead: (n: number, kept: boolean) => void
  /** Adds the milliseconds spent waiting for the body's bytes (the network behind the hashing and disk). */
  waits?: { networkMs: number }
}

/**
 * Reads `body` into `w`'s buffers, chunk after chunk, until `stopAt` or
 * the body's end: each whole chunk is completed (to be verified and
 * written) or discarded. A read never crosses from kept bytes into
 * unwanted ones, so discarded bytes are never written.
 */
export const receiveChunks = async (w: ChunkWriter, body: BodySource, o: ReceiveOptions): Promise<void> => {
  const { chunks, at, stopAt, collect } = o
  let pos = at.pos
  // Index of the chunk at `pos` (requests start at a chunk boundary: a range's first chunk, or 0).
  let ci = chunkAt(chunks, pos)
  // End of the run of chunks to keep that starts at chunk ci.
  let runEnd = -1
  await w.seek(pos)
  while (pos < stopAt) {
    const keep = collect(ci)
    let limit: number
    if (keep) {
      if (runEnd <= pos) {
        let j = ci
        while (j + 1 < chunks.length && chunks[j + 1]!.offset < stopAt && collect(j + 1)) j++
        runEnd = chunks[j]!.offset + chunks[j]!.size
      }
      limit = runEnd - pos
    } else {
      limit = chunks[ci]!.offset + chunks[ci]!.size - pos
    }
    let space = w.space()
    if (space.length === 0) {
      await w.rotate()
      continue
    }
    if (space.length > limit) space = space.subarray(0, limit)
    const t = performance.now()
    const n = await body.read(space)
    if (o.waits) o.waits.networkMs += performance.now() - t
    if (n === 0) break
    w.received(n)
    pos += n
    at.pos = pos
    o.onRead(n, keep)
    for (let c = chunks[ci]; c && c.offset < stopAt && w.pending >= c.size; c = chunks[ci]) {
      if (collect(ci)) w.complete(c, o.from)
      else await w.discard(c.size)
      ci++
    }
  }
}
