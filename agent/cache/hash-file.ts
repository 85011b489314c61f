/**
 * Re-verifying a file at disk speed (notes/performance.md): large reused
 * buffers and pipelined reads (the next read is in flight while the current
 * buffer is hashed). The default 64 KiB stream pieces cost 3–4×.
 */
import { createHash } from 'node:crypto'
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import xxhash, { type XXHashAPI } from 'xxhash-wasm'
import type { Chunk } from '../manifest/types.js'
import { hashRanges } from '../manifest/hash-pool.js'
import { isErrno } from '../errors.js'
import { ioBuffer } from './fs-util.js'

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

/** Bytes read synchronously between two yields to the event loop in xxh64File (~5 ms of work). */
const SYNC_SLICE_BYTES = 32 * 1024 * 1024
let syncBuf: Buffer | undefined

/**
 * xxh64 (seed 0) of a whole file and the number of bytes read.
 *
 * Synchronous 4 MiB reads into one reused buffer, yielding to the event loop
 * every 32 MiB: xxh64 is faster than a thread-pool hand-off per read, and on
 * a busy machine the pipelined async reads waited on the scheduler (0.12x of
 * `xxhsum` where the CPU time was 0.6 s for 512 MiB).
 */
export const xxh64File = async (path: string, opts: { signal?: AbortSignal } = {}): Promise<{ xxh64: string; size: number }> => {
  const { create64 } = await xxh()
  const h = create64()
  const buf = (syncBuf ??= ioBuffer(READ_BUFFER_BYTES))
  const fd = openSync(path, 'r')
  try {
    const { size } = fstatSync(fd)
    let pos = 0
    let slice = 0
    while (pos < size) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos)
      if (n === 0) break // file shorter than its stat: the caller compares sizes
      h.update(buf.subarray(0, n))
      pos += n
      slice += n
      if (slice >= SYNC_SLICE_BYTES) {
        slice = 0
        await new Promise<void>((r) => setImmediate(r))
        throwIfAborted(opts.signal)
      }
    }
    return { xxh64: xxh64Hex(h.digest()), size: pos }
  } finally {
    closeSync(fd)
  }
}

/** sha256 of a whole file. */
export const sha256File = async (path: string, opts: { signal?: AbortSignal } = {}): Promise<{ sha256: string; size: number }> => {
  const h = createHash('sha256')
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    const read = await readPipelined(fh, 0, size, (p) => h.update(p), opts)
    return { sha256: h.digest('hex'), size: read }
  } finally {
    await fh.close()
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

/**
 * sha256 per range on worker threads (manifest/hash-pool: one per core, large
 * reads); a file shorter than the ranges (a truncated object) falls back to
 * the inline hasher, which reports the missing ranges as unmatched.
 */
export const hashRangesParallel: RangeHasher = async (path, ranges, opts = {}) => {
  try {
    return await hashRanges(path, ranges, opts.signal ? { signal: opts.signal } : {})
  } catch (e) {
    if (isErrno(e, 'EBADSIZE')) return hashRangesInline(path, ranges, opts)
    throw e
  }
}

/** Indexes of the chunks whose bytes in `path` do not match their sha256. */
export const badChunks = async (path: string, chunks: readonly Chunk[], opts: { signal?: AbortSignal; hasher?: RangeHasher } = {}): Promise<number[]> => {
  const hasher = opts.hasher ?? hashRangesParallel
  const got = await hasher(path, chunks, opts.signal ? { signal: opts.signal } : {})
  return chunks.filter((c, i) => got[i] !== c.sha256).map((c) => c.index)
}
