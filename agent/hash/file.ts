/**
 * Re-verifying a file at disk speed (notes/performance.md): large reused
 * page-aligned buffers, pipelined or synchronous reads, and the digests on
 * every core (the hash pool, hash/pool.ts): sha256 per chunk (strong) or the
 * fast digest (xxh64 per 64 MiB segment, hash/segments.ts). The default
 * 64 KiB stream pieces cost 3–4×.
 */
import { createHash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import { BootAgentError, isErrno } from '../core/errors.js'
import { ioBuffer } from '../core/io-buffer.js'
import { defaultHashWorkers, endIdleHashWorkers, prewarmHashWorkers } from './pool.js'
import { hashRanges } from './ranges.js'
import { defaultXxh64Threads, prewarmXxh64Workers } from './segments.js'

/** Read size for whole-file hashing. */
export const READ_BUFFER_BYTES = 4 * 1024 * 1024

const throwIfAborted = (signal?: AbortSignal): void => {
  if (signal?.aborted) throw signal.reason ?? new BootAgentError('EABORT', 'aborted')
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

/**
 * Starts, parked, the hash pool's workers a re-verification in `mode` hashes
 * on: for the fast digest (xxh64, with xxhash-wasm instantiated, at most
 * MAX_DEFAULT_XXH64_THREADS) or for strong verification's sha256, one per
 * core, or one fewer with `callerHashes` (the calling thread hashes too:
 * xxh64Segments without `offThread`, {@link hashRangesWithCaller}).
 */
export const prewarmVerifyWorkers = async (mode: 'fast' | 'strong', opts: { callerHashes?: boolean } = {}): Promise<void> =>
  mode === 'strong' ? prewarmHashWorkers(defaultHashWorkers(opts.callerHashes)) : prewarmXxh64Workers(defaultXxh64Threads() - (opts.callerHashes ? 1 : 0))

/** Ends the idle workers of both kinds of re-verification now (one pool: hash/pool.ts). */
export const endIdleVerifyWorkers = (): Promise<void> => endIdleHashWorkers()

/**
 * Hashes byte ranges of a file with sha256, returning one hex digest per
 * range. The default runs on this thread; the hash pool can be plugged in
 * (hash/ranges.ts) to hash ranges in parallel.
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
 * sha256 per range on worker threads (hash/ranges.ts: one per core, large
 * reads); a file shorter than the ranges (a truncated object) falls back to
 * the inline hasher, which reports the missing ranges as unmatched.
 */
export const hashRangesParallel: RangeHasher = parallelHasher(false)

/**
 * {@link hashRangesParallel} with the calling thread hashing too, on one
 * worker fewer (hashRanges `callerHashes`): for a caller with nothing else to
 * do meanwhile, such as `boot-agent verify --strong`.
 */
export const hashRangesWithCaller: RangeHasher = parallelHasher(true)

/** A byte range pinned by its sha256 (structurally a manifest's `Chunk`: the hash room knows no manifest). */
export interface PinnedRange {
  /** The range's index in its list (a manifest chunk's index). */
  index: number
  offset: number
  size: number
  /** Lower-case hex sha256 of the range's bytes. */
  sha256: string
}

/**
 * An error reading a file's bytes that the kernel gives for those bytes only
 * (EIO: a block fs-verity refused, a bad sector), here or from a hash worker
 * (EHASHIO with the worker's errno): the range is bad, the disk may be fine.
 */
export const isReadError = (e: unknown): boolean =>
  isErrno(e, 'EIO') || (e instanceof BootAgentError && e.code === 'EHASHIO' && e.context.errno === 'EIO')

/**
 * Indexes of the chunks whose bytes in `path` do not match their sha256. A
 * chunk that cannot be read (EIO: {@link isReadError}) is a bad chunk, to be
 * fetched again, not a failure of the whole check: after the fast pass fails
 * on one, each chunk is read on its own.
 */
export const badChunks = async (path: string, chunks: readonly PinnedRange[], opts: { signal?: AbortSignal; hasher?: RangeHasher } = {}): Promise<number[]> => {
  const hasher = opts.hasher ?? hashRangesParallel
  let got: string[]
  try {
    got = await hasher(path, chunks, opts.signal ? { signal: opts.signal } : {})
  } catch (e) {
    if (!isReadError(e)) throw e
    got = await hashEachChunk(path, chunks, opts.signal)
  }
  return chunks.filter((c, i) => got[i] !== c.sha256).map((c) => c.index)
}

/** sha256 of each range read on its own; '' for one that reads as EIO (the slow path of {@link badChunks}). */
const hashEachChunk = async (path: string, ranges: readonly PinnedRange[], signal?: AbortSignal): Promise<string[]> => {
  const fh = await open(path, 'r')
  try {
    const out: string[] = []
    for (const r of ranges) {
      signal?.throwIfAborted()
      try {
        const buf = Buffer.allocUnsafe(r.size)
        const { bytesRead } = await fh.read(buf, 0, r.size, r.offset)
        out.push(bytesRead === r.size ? createHash('sha256').update(buf).digest('hex') : '')
      } catch (e) {
        if (!isReadError(e)) throw e
        out.push('')
      }
    }
    return out
  } finally {
    await fh.close()
  }
}
