/**
 * The metadata file next to each cached object. It is read back from a disk
 * that is never trusted blindly (SPEC §5), so {@link parseObjectMeta} checks
 * every field and returns a problem instead of a half-typed value.
 */
import type { Chunk } from '../manifest/types.js'
import { SHA256_HEX } from './layout.js'
import { XXH64_SEGMENT_BYTES, segmentCount } from '../hash/xxh64-format.js'

/**
 * The metadata format this code writes (3: the chunk list as two compact
 * fields). Schema 2 (the chunk list as objects) is read as well; schema 1
 * (one xxh64 of the whole object) is not.
 */
export const META_SCHEMA = 3

// The xxh64 segment (part of the cache format) is defined with the digest, in the hash room.
export { XXH64_SEGMENT_BYTES, segmentCount }

/**
 * The metadata in memory. On disk (schema 3, {@link serializeObjectMeta}) the
 * chunk list is stored as `chunkSizes` (one number per chunk) and
 * `chunkSha256` (their sha256 digests as one string of 64 hex digits each):
 * index and offset follow from the order. A 2 GiB image's metadata is then
 * 2 MB instead of 3.6 MB, and reading it makes two values instead of ~29,000
 * objects and strings: verification reads it on every cache hit.
 */
export interface ObjectMeta {
  schema: typeof META_SCHEMA
  size: number
  /** Lower-case hex sha256 of the object; equals its file name. */
  sha256: string
  /**
   * Lower-case hex xxh64 (seed 0) of each {@link XXH64_SEGMENT_BYTES} segment
   * of the object, in order ({@link segmentCount} of them): the fast re-verification.
   */
  xxh64: string[]
  /** The chunk list it was fetched with (contiguous, covering [0, size)). */
  chunks: Chunk[]
  /** ISO time of the last full verification (fast or strong). */
  verifiedAt: string
  /** ISO time of the last use; eviction removes the least recent first. */
  lastUsedAt: string
  /** Image names that have pointed at this object, oldest first. */
  names: string[]
  /** URLs it was fetched from. */
  urls: string[]
  /** Chunk indexes found corrupt on disk and not yet repaired. */
  corruptChunks?: number[]
}

const XXH64_HEX = /^[0-9a-f]{16}$/
const MAX_LIST = 64

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isSize = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
const isIso = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v))
const isStrList = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string')

/**
 * Checks a chunk list: contiguous, in order, non-empty chunks, covering
 * exactly [0, size). Returns a problem or undefined.
 */
export const chunkListProblem = (chunks: unknown, size: number): string | undefined => {
  if (!Array.isArray(chunks)) return 'chunks is not a list'
  if (size > 0 && chunks.length === 0) return 'chunks is empty'
  let at = 0
  for (const [i, c] of chunks.entries()) {
    if (!isObj(c)) return `chunks[${i}] is not an object`
    if (c.index !== i) return `chunks[${i}].index is ${String(c.index)}`
    if (c.offset !== at) return `chunks[${i}].offset is ${String(c.offset)}, expected ${at}`
    if (!isSize(c.size) || c.size === 0) return `chunks[${i}].size is not a positive integer`
    if (typeof c.sha256 !== 'string' || !SHA256_HEX.test(c.sha256)) return `chunks[${i}].sha256 is not lower-case hex sha256`
    at += c.size
  }
  if (at !== size) return `chunks add up to ${at} bytes, not ${size}`
  return undefined
}

const HEX_RUN = /^[0-9a-f]*$/

/**
 * Schema 3's chunk list: `chunkSizes` and `chunkSha256` checked (positive
 * sizes adding up to `size`, 64 lower-case hex digits each) and expanded to
 * chunks, or a problem.
 */
export const decodeChunkList = (sizes: unknown, digests: unknown, size: number): Chunk[] | string => {
  if (!Array.isArray(sizes)) return 'chunkSizes is not a list'
  if (typeof digests !== 'string') return 'chunkSha256 is not a string'
  if (size > 0 && sizes.length === 0) return 'chunkSizes is empty'
  if (digests.length !== 64 * sizes.length) return `chunkSha256 has ${digests.length} hex digits, expected 64 for each of ${sizes.length} chunk(s)`
  if (!HEX_RUN.test(digests)) return 'chunkSha256 is not lower-case hex'
  const chunks = new Array<Chunk>(sizes.length)
  let at = 0
  for (let i = 0; i < sizes.length; i++) {
    const n: unknown = sizes[i]
    if (!isSize(n) || n === 0) return `chunkSizes[${i}] is not a positive integer`
    chunks[i] = { index: i, offset: at, size: n, sha256: digests.slice(64 * i, 64 * i + 64) }
    at += n
  }
  if (at !== size) return `chunkSizes add up to ${at} bytes, not ${size}`
  return chunks
}

/** The metadata file's text (schema 3: the chunk list in its compact form). */
export const serializeObjectMeta = (meta: ObjectMeta): string => {
  const { chunks, ...rest } = meta
  const digests = new Array<string>(chunks.length)
  const sizes = new Array<number>(chunks.length)
  for (let i = 0; i < chunks.length; i++) {
    sizes[i] = chunks[i]!.size
    digests[i] = chunks[i]!.sha256
  }
  return JSON.stringify({ ...rest, schema: META_SCHEMA, chunkSizes: sizes, chunkSha256: digests.join('') })
}

/** A typed meta, or a string saying what is wrong with it. */
export const parseObjectMeta = (v: unknown, expectSha: string): ObjectMeta | string => {
  if (!isObj(v)) return 'not a JSON object'
  // Schema 1 (one whole-object xxh64) is not read: such an object is handled
  // like one with malformed metadata (a fetch checks every chunk's sha256 and
  // writes the current schema; nothing good is downloaded again).
  if (v.schema === 1) return 'schema 1 (an older format: whole-object xxh64)'
  if (v.schema !== META_SCHEMA && v.schema !== 2) return `unknown schema ${JSON.stringify(v.schema)}`
  if (v.sha256 !== expectSha) return `sha256 ${JSON.stringify(v.sha256)} does not match the object name`
  if (!isSize(v.size)) return 'size is not a non-negative integer'
  const segs = segmentCount(v.size)
  if (!Array.isArray(v.xxh64) || v.xxh64.length !== segs || !v.xxh64.every((d) => typeof d === 'string' && XXH64_HEX.test(d))) {
    return `xxh64 is not a list of ${segs} segment digest(s) of 16 hex digits`
  }
  let chunks: Chunk[]
  if (v.schema === 2) {
    // Schema 2: the chunk list as objects (read; rewritten as schema 3 by the next write).
    const bad = chunkListProblem(v.chunks, v.size)
    if (bad) return bad
    chunks = v.chunks as Chunk[]
  } else {
    const decoded = decodeChunkList(v.chunkSizes, v.chunkSha256, v.size)
    if (typeof decoded === 'string') return decoded
    chunks = decoded
  }
  if (!isIso(v.verifiedAt)) return 'verifiedAt is not a time'
  if (!isIso(v.lastUsedAt)) return 'lastUsedAt is not a time'
  if (!isStrList(v.names) || !isStrList(v.urls)) return 'names/urls are not lists of strings'
  if (v.corruptChunks !== undefined) {
    const cc = v.corruptChunks
    if (!Array.isArray(cc) || !cc.every((n) => Number.isSafeInteger(n) && n >= 0 && n < chunks.length)) return 'corruptChunks is not a list of chunk indexes'
  }
  const meta: ObjectMeta = {
    schema: META_SCHEMA,
    size: v.size,
    sha256: v.sha256,
    xxh64: v.xxh64 as string[],
    chunks,
    verifiedAt: v.verifiedAt,
    lastUsedAt: v.lastUsedAt,
    names: v.names,
    urls: v.urls,
    ...(v.corruptChunks !== undefined ? { corruptChunks: v.corruptChunks as number[] } : {}),
  }
  return meta
}

/** Adds `item` to a bounded, de-duplicated list (most recent last). */
export const remember = (list: string[], item: string | undefined): string[] => {
  if (item === undefined || item === '') return list
  const next = list.filter((x) => x !== item)
  next.push(item)
  return next.slice(-MAX_LIST)
}

/**
 * The chunks (of a contiguous list sorted by offset) holding any byte of the
 * given segments: the only ones whose sha256 can say which bytes of a segment
 * with a wrong xxh64 are bad.
 */
export const chunksInSegments = (chunks: readonly Chunk[], segments: readonly number[]): Chunk[] => {
  const out: Chunk[] = []
  let c = 0
  for (const k of [...new Set(segments)].sort((a, b) => a - b)) {
    const start = k * XXH64_SEGMENT_BYTES
    const end = start + XXH64_SEGMENT_BYTES
    // First chunk ending after `start` (binary search: 28,000 chunks for 2 GiB).
    let lo = c
    let hi = chunks.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (chunks[mid]!.offset + chunks[mid]!.size <= start) lo = mid + 1
      else hi = mid
    }
    for (c = lo; c < chunks.length && chunks[c]!.offset < end; c++) {
      if (out[out.length - 1] !== chunks[c]) out.push(chunks[c]!)
    }
    // A chunk straddling into the next segment is looked at again there (and not added twice).
    if (c > lo) c--
  }
  return out
}
