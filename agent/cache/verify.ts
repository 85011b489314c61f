/**
 * Re-verification of one cached object: a verdict, and nothing written.
 * Fast mode reads the whole object once for the xxh64 of each 64 MiB
 * segment; when some differ, the sha256 of the chunks overlapping those
 * segments (only) says which are bad. Strong mode checks every chunk's
 * sha256. What the verdict finds wrong in the metadata itself (a recorded
 * xxh64 that the bytes disprove) is for the caller to record
 * (Cache.recordVerdict): lookup does, `verify` and the daemon's self-check too.
 */
import { lstat } from 'node:fs/promises'
import type { Chunk } from '../manifest/types.js'
import { badChunks, type RangeHasher } from '../hash/file.js'
import { chunksInSegments, segmentCount, type ObjectMeta } from './meta.js'

export type VerifyMode = 'fast' | 'strong'

/** The fast digest of an object as read from the disk: xxh64 of each 64 MiB segment, and the bytes read. */
export interface FastDigest {
  xxh64: string[]
  size: number
}

export interface VerifyResult {
  ok: boolean
  /** Why it is not ok (size, xxh64, chunk digests, metadata). */
  reason?: string
  /** Chunks whose bytes do not match (empty when ok or unknown). */
  badChunks: number[]
  /** The chunk list the verdict is about. */
  chunks?: Chunk[]
  /**
   * The object's metadata as the verdict says it should stand (absent when
   * missing or malformed): with `staleXxh64`, the recorded one corrected.
   */
  meta?: ObjectMeta
  /**
   * The segments (as text, e.g. "1,3") whose recorded xxh64 is wrong while
   * every chunk in them matches its sha256: the bytes are good, the record
   * is not; `meta` carries digests computed here from the bytes.
   */
  staleXxh64?: string
}

export interface VerifyOptions {
  mode?: VerifyMode
  /** The chunk list to judge by (the manifest being fetched); default the metadata's. */
  chunks?: Chunk[]
  signal?: AbortSignal
  /** This object's metadata as just read (by list() or readMeta), not read again. */
  meta?: ObjectMeta
  /** The object's fast digest, started earlier by the caller; used in fast mode, for the verdict only. */
  digest?: Promise<FastDigest>
}

/** What verification needs from the cache (the Cache class). */
export interface VerifyingCache {
  readonly hasher: RangeHasher
  objectPath(sha: string): string
  objectKind(sha: string): Promise<'file' | 'none' | 'foreign'>
  readMeta(sha: string): Promise<ObjectMeta | undefined>
  fastDigest(sha: string, opts?: { signal?: AbortSignal }): Promise<FastDigest>
}

/** Judges object `sha` (see the file's comment); reads only, writes nothing. */
export const verifyObject = async (cache: VerifyingCache, sha: string, opts: VerifyOptions = {}): Promise<VerifyResult> => {
  const kind = await cache.objectKind(sha)
  if (kind !== 'file') return { ok: false, reason: kind === 'none' ? 'missing' : 'not a regular file', badChunks: [] }
  const path = cache.objectPath(sha)
  const meta = opts.meta?.sha256 === sha ? opts.meta : await cache.readMeta(sha)
  const chunks = opts.chunks ?? meta?.chunks
  const signal = opts.signal ? { signal: opts.signal } : {}
  const findBad = async (reason: string, among?: Chunk[]): Promise<VerifyResult> => {
    if (!chunks) return { ok: false, reason: `${reason}; no chunk list to locate the damage`, badChunks: [] }
    const bad = await badChunks(path, among ?? chunks, { hasher: cache.hasher, ...signal })
    return { ok: bad.length === 0, reason: bad.length ? `${reason}; ${bad.length} chunk(s) differ` : reason, badChunks: bad, chunks, ...(meta ? { meta } : {}) }
  }
  if (!meta) return { ...(await findBad('metadata missing or malformed')), ok: false }
  const st = await lstat(path)
  if ((opts.mode ?? 'fast') === 'strong') {
    const r = await findBad('strong verification')
    if (st.size !== meta.size) return { ...r, ok: false, reason: `size ${st.size}, expected ${meta.size}` }
    return r.ok ? { ok: true, badChunks: [], chunks: r.chunks ?? meta.chunks, meta } : r
  }
  if (st.size !== meta.size) return { ...(await findBad(`size ${st.size}, expected ${meta.size}`)), ok: false }
  const fastDigest = () => cache.fastDigest(sha, signal)
  const found = await (opts.digest ?? fastDigest())
  if (found.size !== meta.size) return { ...(await findBad(`read ${found.size} bytes, expected ${meta.size}`)), ok: false }
  const badSegments: number[] = []
  for (let k = 0; k < segmentCount(meta.size); k++) if (found.xxh64[k] !== meta.xxh64[k]) badSegments.push(k)
  if (!badSegments.length) return { ok: true, badChunks: [], chunks: chunks ?? meta.chunks, meta }
  const which = `${badSegments.slice(0, 10).join(',')}${badSegments.length > 10 ? ',…' : ''}`
  const r = await findBad(`xxh64 of ${badSegments.length} of ${found.xxh64.length} segment(s) differs (${which})`, chunksInSegments(chunks ?? meta.chunks, badSegments))
  if (r.ok) {
    // Every chunk in those segments matches its sha256: the recorded xxh64 was wrong, not the bytes.
    // Only digests computed here may be recorded: a caller's `digest` is trusted for a verdict, not for the record.
    const digest = opts.digest ? (await fastDigest()).xxh64 : found.xxh64
    return { ok: true, badChunks: [], chunks: r.chunks ?? meta.chunks, meta: { ...meta, xxh64: digest }, staleXxh64: which }
  }
  return { ...r, ok: false }
}
