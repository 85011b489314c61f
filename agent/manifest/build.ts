/**
 * Builds the manifest of an image file (SPEC §4): content-defined chunk
 * boundaries, the sha256 of every chunk, the sha256 of the whole image.
 *
 * Work split, on this 2-core kind of machine (measured: bench/manifest-build.ts):
 *   1. the calling thread reads the file in large pipelined reads and finds the
 *      CDC cuts (~1.2-1.7 GB/s), while one worker thread hashes the whole file
 *      (sha256 ~1.7 GB/s; the file comes from the page cache by then);
 *   2. the chunks' sha256s are then computed on all cores by the hash pool.
 * Small images (< 8 MiB) are done on the calling thread in one pass.
 *
 *   3. the xxh64 of every 64 MiB segment (`xxh64Segments`, the reference of a
 *      cache hit's fast re-verification) on all cores, from the page cache
 *      (~0.1 s per GiB per thread; measured in hash/segments.ts).
 *
 * The result is re-validated by parseManifest before it is returned, so a
 * publisher can never emit a manifest that nodes would refuse.
 */
import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import { BootAgentError, ConfigError, isErrno } from '../core/errors.js'
import { Chunker, DEFAULT_CHUNKING, assertChunkingParams } from './cdc.js'
import { hashFile, hashRanges } from '../hash/ranges.js'
import { xxh64Segments } from '../hash/segments.js'
import { fsverityDigestOfFile } from '../hash/fsverity.js'
import { parseManifest } from './schema.js'
import { toWire } from './serialize.js'
import type { Chunk, ChunkingParams, Manifest } from './types.js'

export interface BuildManifestOptions {
  /** Image name (letters, digits, `._+@:-`; no `/` or `..`). */
  name: string
  /** Where nodes fetch the image: absolute http(s) URLs or URLs relative to the manifest's own URL. */
  urls: string[]
  /** Chunking parameters; default min 16 KiB / avg 64 KiB / max 256 KiB (`fastcdc-gear-v1`). */
  chunking?: ChunkingParams
  /** Image format; default detected: `squashfs` (magic `hsqs`) or `raw`. */
  format?: string
  /** Clock for `created`; default `() => new Date()`. */
  now?: () => Date
  /** Aborts the build (reads stop, workers are terminated). */
  signal?: AbortSignal
  /** Worker threads for hashing; default os.availableParallelism(); 0 = calling thread only. */
  workers?: number
  /** Read size in bytes; default 4 MiB. */
  bufferSize?: number
  /**
   * Write `xxh64Segments` (default true). False only to publish for nodes
   * whose agent predates the field (they refuse a manifest carrying it, as
   * any unknown field); newer nodes then check a hit by the sha256 of every
   * chunk (docs/manifest.md, "Rolling out xxh64Segments").
   */
  xxh64Segments?: boolean
  /**
   * The architecture the image runs on (`uname -m` spelling), written as
   * `arch`; none when omitted (nodes then cannot refuse it for another
   * architecture). docs/manifest.md, "Rolling out `arch`".
   */
  arch?: string
  /**
   * Write `fsverityDigest` (default true; hash/fsverity.ts). False only to
   * publish for nodes whose agent predates the field (they refuse it as an
   * unknown field; docs/manifest.md, "Rolling out fsverityDigest").
   */
  fsverity?: boolean
  /** Progress: `phase` is `cut` (chunking + whole-image hash) then `hash` (chunk digests). */
  onProgress?: (p: { phase: 'cut' | 'hash'; bytesDone: number; bytesTotal: number }) => void
}

/** Images below this size are built in one pass on the calling thread. */
const SMALL_IMAGE_BYTES = 8 * 1024 * 1024
const DEFAULT_READ_BYTES = 4 * 1024 * 1024
const SQUASHFS_MAGIC = Buffer.from('hsqs', 'latin1')

const abortReason = (signal: AbortSignal): unknown => signal.reason ?? new BootAgentError('EABORT', 'aborted')

/**
 * Reads the whole file once with two alternating buffers (the next read is in
 * flight while the current buffer is processed) and feeds `onData`.
 * Returns the number of bytes read; `expected` guards against a file that
 * changes size under us.
 */
const streamFile = async (
  path: string,
  expected: number,
  bufferSize: number,
  signal: AbortSignal | undefined,
  onData: (buf: Buffer) => void,
): Promise<number> => {
  const fh = await open(path, 'r')
  try {
    const bufs: Buffer[] = [Buffer.allocUnsafeSlow(bufferSize), Buffer.allocUnsafeSlow(bufferSize)]
    let pos = 0
    let which = 0
    let pending: Promise<{ bytesRead: number }> = fh.read(bufs[0]!, 0, bufferSize, 0)
    // Bounded by the file size: each turn consumes one non-empty read.
    for (;;) {
      if (signal?.aborted) throw abortReason(signal)
      const { bytesRead } = await pending
      if (bytesRead === 0) break
      const cur = bufs[which]!
      pos += bytesRead
      which ^= 1
      pending = fh.read(bufs[which]!, 0, bufferSize, pos)
      onData(cur.subarray(0, bytesRead))
      if (pos > expected) break
    }
    await pending.catch(() => undefined)
    if (pos !== expected) {
      throw new ConfigError('image', `${path} changed size while it was read (${expected} bytes at start, ${pos} read)`)
    }
    return pos
  } finally {
    await fh.close()
  }
}

const detectFormat = async (path: string): Promise<string> => {
  const fh = await open(path, 'r')
  try {
    const b = Buffer.alloc(4)
    const { bytesRead } = await fh.read(b, 0, 4, 0)
    return bytesRead === 4 && b.equals(SQUASHFS_MAGIC) ? 'squashfs' : 'raw'
  } finally {
    await fh.close()
  }
}

/** Chunk list from end offsets. */
const chunksFromEnds = (ends: number[]): Omit<Chunk, 'sha256'>[] =>
  ends.map((end, i) => {
    const offset = i === 0 ? 0 : ends[i - 1]!
    return { index: i, offset, size: end - offset }
  })

/**
 * The size of the image file at `imagePath`, refusing what is not a non-empty
 * regular file as a usage error named `key`. Opened non-blocking: a FIFO given
 * by a slip is refused at once, not waited on for a writer forever.
 */
export const imageFileSize = async (imagePath: string, key = 'image'): Promise<number> => {
  const fh = await open(imagePath, constants.O_RDONLY | constants.O_NONBLOCK).catch((e: unknown) => {
    throw isErrno(e, 'ENOENT') ? new ConfigError(key, `${imagePath} does not exist`) : e
  })
  let size: number
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new ConfigError(key, `${imagePath} is not a regular file (${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'a device or socket'}; give the image file)`)
    size = st.size
  } finally {
    await fh.close()
  }
  if (size === 0) throw new ConfigError(key, `${imagePath} is empty`)
  return size
}

/** Builds and validates the manifest of the image at `imagePath`. */
export const buildManifest = async (imagePath: string, opts: BuildManifestOptions): Promise<Manifest> => {
  const chunking = opts.chunking ?? { ...DEFAULT_CHUNKING }
  assertChunkingParams(chunking)
  const bufferSize = opts.bufferSize ?? DEFAULT_READ_BYTES
  const signal = opts.signal
  if (signal?.aborted) throw abortReason(signal)

  const size = await imageFileSize(imagePath)
  const format = opts.format ?? (await detectFormat(imagePath))
  const progress = opts.onProgress

  const chunker = new Chunker(chunking)
  const ends: number[] = []
  let sha256: string
  let chunks: Chunk[]

  if (size < SMALL_IMAGE_BYTES || opts.workers === 0) {
    // One pass: cuts, whole hash and chunk hashes together on this thread.
    const whole = createHash('sha256')
    let chunkHash = createHash('sha256')
    const digests: string[] = []
    let base = 0
    await streamFile(imagePath, size, bufferSize, signal, (buf) => {
      whole.update(buf)
      let from = 0
      for (const end of chunker.push(buf)) {
        chunkHash.update(buf.subarray(from, end - base))
        digests.push(chunkHash.digest('hex'))
        chunkHash = createHash('sha256')
        ends.push(end)
        from = end - base
      }
      chunkHash.update(buf.subarray(from))
      base += buf.length
      progress?.({ phase: 'cut', bytesDone: base, bytesTotal: size })
    })
    for (const end of chunker.end()) {
      digests.push(chunkHash.digest('hex'))
      ends.push(end)
    }
    sha256 = whole.digest('hex')
    chunks = chunksFromEnds(ends).map((c, i) => ({ ...c, sha256: digests[i]! }))
  } else {
    const wholeHash = hashFile(imagePath, size, { signal, bufferSize })
    // A rejection of the whole-file hash must not go unobserved while the cut runs.
    wholeHash.catch(() => undefined)
    let done = 0
    await streamFile(imagePath, size, bufferSize, signal, (buf) => {
      for (const end of chunker.push(buf)) ends.push(end)
      done += buf.length
      progress?.({ phase: 'cut', bytesDone: done, bytesTotal: size })
    })
    ends.push(...chunker.end())
    sha256 = await wholeHash
    const plain = chunksFromEnds(ends)
    const digests = await hashRanges(imagePath, plain, {
      signal,
      bufferSize,
      ...(opts.workers !== undefined ? { workers: opts.workers } : {}),
      onProgress: (bytesDone) => progress?.({ phase: 'hash', bytesDone, bytesTotal: size }),
    })
    chunks = plain.map((c, i) => ({ ...c, sha256: digests[i]! }))
  }

  let segments: string[] | undefined
  if (opts.xxh64Segments ?? true) {
    // The same digest, segment size and seed the cache reads an object with (hash/segments.ts).
    const seg = await xxh64Segments(imagePath, { ...(signal ? { signal } : {}), ...(opts.workers === 0 ? { threads: 1 } : {}) })
    if (seg.size !== size) throw new ConfigError('image', `${imagePath} changed size while it was read (${size} bytes at start, ${seg.size} read)`)
    segments = seg.xxh64
  }

  // One more read of the image (sha256 per 4 KiB block): the digest a node's kernel measures of the sealed object.
  const fsverityDigest = (opts.fsverity ?? true) ? await fsverityDigestOfFile(imagePath, signal ? { signal } : {}) : undefined

  const m: Manifest = {
    schema: 1,
    name: opts.name,
    format,
    created: (opts.now ?? (() => new Date()))().toISOString(),
    size,
    sha256,
    chunking: { ...chunking },
    chunks,
    urls: [...opts.urls],
    ...(segments ? { xxh64Segments: segments } : {}),
    ...(opts.arch !== undefined ? { arch: opts.arch } : {}),
    ...(fsverityDigest ? { fsverityDigest } : {}),
  }
  // Same rules as every node applies; relative URLs stay relative (no baseUrl).
  return parseManifest(toWire(m))
}
