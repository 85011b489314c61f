/**
 * The whole-image digests of a download (sha256, and the xxh64 of each
 * 64 MiB segment the cache records), extended strictly in image order.
 * Chunks verified while they were next in order are fed by the hash worker
 * straight from the write buffers (the cursor moves on its report); bytes
 * that were not (parallel ranges, resumed or reused chunks) are read back
 * from the partial file here, in two shared buffers taken in turn.
 */
import { SizeError } from '../core/errors.js'
import type { Chunk } from '../manifest/types.js'
import { xxhWasmModule } from '../hash/xxh.js'
import { ioBuffer } from '../core/io-buffer.js'
import type { PartialObject } from '../cache/partial.js'
import { DownloadHasher } from '../hash/download-hasher.js'

/** Read-back buffers for the whole-image digests (1 MiB reads are as fast as 4 from the page cache; less RSS here and in the whole-image worker's wasm memory). */
export const FEED_BUFFER_BYTES = 1024 * 1024

/** The download's hash workers and how far the whole-image digests have got. */
export class DigestFeed {
  /** Chunks before this one are in the whole-image digests. */
  cursor = 0
  private busy = false
  private readBufs: [SharedArrayBuffer, SharedArrayBuffer] | undefined
  /** Verifies chunks (and feeds the in-order ones); the whole-image digests. */
  readonly hasher: DownloadHasher

  private constructor(
    xxhModule: unknown,
    private readonly chunks: readonly Chunk[],
    private readonly partial: PartialObject,
    private readonly signal: AbortSignal,
  ) {
    this.hasher = new DownloadHasher(xxhModule, (i) => {
      // The worker fed chunk i to the whole-image digests (in image order).
      this.cursor = Math.max(this.cursor, i + 1)
    })
  }

  /** Starts the hash workers for a download into `partial`. */
  static async start(chunks: readonly Chunk[], partial: PartialObject, signal: AbortSignal): Promise<DigestFeed> {
    return new DigestFeed(await xxhWasmModule(), chunks, partial, signal)
  }

  /** Extends the digests over written chunks from disk (page cache), as far as they are contiguous. */
  async advance(): Promise<void> {
    if (this.busy) return
    this.busy = true
    try {
      const w = this.partial.written
      while (this.cursor < this.chunks.length && w[this.cursor]) {
        let j = this.cursor
        while (j + 1 < this.chunks.length && w[j + 1]) j++
        const start = this.chunks[this.cursor]!.offset
        const end = this.chunks[j]!.offset + this.chunks[j]!.size
        await this.feedFromDisk(start, end, j + 1)
        this.cursor = Math.max(this.cursor, j + 1)
      }
    } finally {
      this.busy = false
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
          const { bytesRead } = await this.partial.fh.read(buf, got, want - got, pos + got)
          if (bytesRead === 0) throw new SizeError({ expected: end - start, found: pos + got - start, what: `partial file ${this.partial.path} at ${start}` })
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

  /** Whether every chunk is in the whole-image digests. */
  get complete(): boolean {
    return this.cursor === this.chunks.length
  }

  /** The whole-image sha256 and segment xxh64s (once {@link complete}); nothing can be fed after. */
  digest(): Promise<{ sha256: string; xxh64: string[] }> {
    return this.hasher.digest()
  }

  /** Ends the hash workers. */
  close(): Promise<void> {
    return this.hasher.close()
  }
}
