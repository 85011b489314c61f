/**
 * Re-verification of one cached object: a verdict, and nothing written.
 * Fast mode reads the whole object once for the xxh64 of each 64 MiB
 * segment; when some differ, the sha256 of the chunks overlapping those
 * segments (only) says which are bad. Strong mode checks every chunk's
 * sha256. What the verdict finds wrong in the metadata itself (a recorded
 * xxh64 that the bytes disprove) is for the caller to record
 * (Cache.recordVerdict): lookup does, `verify` and the daemon's self-check too.
 *
 * The reference. With `published` (what the head published: the manifest's
 * size, chunk list and segment digests), every digest the bytes are compared
 * with comes from it and the local metadata is only a record (lastUsedAt,
 * names): a file on the cache partition is never the root of trust of a boot
 * (docs/cache.md, "What a hit is checked against"). A manifest without
 * segment digests (an older publisher) makes a fast check a strong one.
 * Without `published` (`boot-agent verify` with no manifest, the daemon's
 * background check) the metadata is the reference: that finds corruption,
 * not tampering, and the verdict says so (`verifiedBy: 'metadata-…'`).
 *
 * Sealed objects (seal.ts, issue #19). When the manifest carries an
 * `fsverityDigest` and the kernel measures the object as sealed with that
 * digest, the verdict is good without reading a byte (`manifest-fsverity`):
 * the kernel checks every block read later against the sealed Merkle tree.
 * Otherwise (no digest, not sealed, another digest, chunks marked corrupt at
 * run time) the bytes are read as below, and a chunk that reads as EIO (a block
 * fs-verity refused) is a bad chunk, not a failed check.
 */
import { lstat } from 'node:fs/promises'
import type { Chunk } from '../manifest/types.js'
import { badChunks, isReadError, type RangeHasher } from '../hash/file.js'
import { chunksInSegments, segmentCount, type ObjectMeta } from './meta.js'
import { chooseHitCheck, type SealState } from './seal.js'

export type VerifyMode = 'fast' | 'strong'

/** The fast digest of an object as read from the disk: xxh64 of each 64 MiB segment, and the bytes read. */
export interface FastDigest {
  xxh64: string[]
  size: number
}

/**
 * What a verdict compared the bytes with: the manifest's segment xxh64s or
 * chunk sha256s (the head's word), or the local metadata's (corruption only).
 */
/** `manifest-fsverity`: the kernel's measured digest of the sealed object is the manifest's (no data read). */
export type VerifiedBy = 'manifest-fsverity' | 'manifest-xxh64' | 'manifest-sha256' | 'metadata-xxh64' | 'metadata-sha256'

/** The reference digests the head published for an image (the manifest's fields). */
export interface PublishedDigests {
  size: number
  chunks: Chunk[]
  /** The manifest's `xxh64Segments`; absent in older manifests (then fast is done as strong). */
  xxh64Segments?: readonly string[]
  /** The manifest's `fsverityDigest`; absent in older manifests (then a sealed object is read like any other). */
  fsverityDigest?: string
}

export interface VerifyResult {
  ok: boolean
  /** What the bytes were compared with (set when a comparison was made). */
  verifiedBy?: VerifiedBy
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
  /** Whether the kernel measured the object as sealed with fs-verity (asked only when the manifest carries a digest). */
  sealed?: boolean
  /** Why an object the manifest gives an fs-verity digest for was read rather than measured. */
  readBecause?: string
}

export interface VerifyOptions {
  mode?: VerifyMode
  /**
   * The image's digests as published (the manifest being fetched): the only
   * reference when given. Default the metadata's (corruption, not tampering).
   */
  published?: PublishedDigests
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
  /** The kernel's fs-verity measurement of the object (seal.ts); without it nothing is measured. */
  measure?(sha: string): Promise<SealState>
}

/** Judges object `sha` (see the file's comment); reads only, writes nothing. */
export const verifyObject = async (cache: VerifyingCache, sha: string, opts: VerifyOptions = {}): Promise<VerifyResult> => {
  const kind = await cache.objectKind(sha)
  if (kind !== 'file') return { ok: false, reason: kind === 'none' ? 'missing' : 'not a regular file', badChunks: [] }
  const pub = opts.published
  if (pub?.fsverityDigest === undefined || !cache.measure) return verifyByReading(cache, sha, opts)
  const meta = opts.meta?.sha256 === sha ? opts.meta : await cache.readMeta(sha)
  const measured = await cache.measure(sha)
  const check = chooseHitCheck({ published: pub.fsverityDigest, measured, corruptChunks: meta?.corruptChunks?.length ?? 0 })
  if (check.kind === 'measured' && meta) {
    // The digest covers the size and every block: nothing to read, and nothing the metadata could add.
    return { ok: true, verifiedBy: 'manifest-fsverity', badChunks: [], chunks: pub.chunks, sealed: true, meta: { ...meta, size: pub.size, chunks: pub.chunks, ...(pub.xxh64Segments ? { xxh64: [...pub.xxh64Segments] } : {}) } }
  }
  const why = check.kind === 'read' ? check.why : 'metadata missing or malformed'
  return { ...(await verifyByReading(cache, sha, { ...opts, ...(meta ? { meta } : {}) })), sealed: measured.sealed, readBecause: why }
}

/** The verdict from the bytes (fast or strong; the file's comment). */
const verifyByReading = async (cache: VerifyingCache, sha: string, opts: VerifyOptions): Promise<VerifyResult> => {
  const path = cache.objectPath(sha)
  const meta = opts.meta?.sha256 === sha ? opts.meta : await cache.readMeta(sha)
  const pub = opts.published
  const chunks = pub?.chunks ?? meta?.chunks
  const signal = opts.signal ? { signal: opts.signal } : {}
  const by = (k: 'xxh64' | 'sha256'): VerifiedBy => `${pub ? 'manifest' : 'metadata'}-${k}`
  const findBad = async (reason: string, among?: Chunk[]): Promise<VerifyResult> => {
    if (!chunks) return { ok: false, reason: `${reason}; no chunk list to locate the damage`, badChunks: [] }
    const bad = await badChunks(path, among ?? chunks, { hasher: cache.hasher, ...signal })
    return { ok: bad.length === 0, reason: bad.length ? `${reason}; ${bad.length} chunk(s) differ` : reason, badChunks: bad, chunks, ...(meta ? { meta } : {}) }
  }
  if (!meta) return { ...(await findBad('metadata missing or malformed')), ok: false }
  // A good verdict against the manifest hands back the metadata with the manifest's digests in it:
  // what the caller writes next (touch) then carries them, whatever the file said before.
  const good = (v: VerifiedBy, xxh64 = meta.xxh64): VerifyResult => ({ ok: true, verifiedBy: v, badChunks: [], chunks: chunks ?? meta.chunks, meta: pub ? { ...meta, size: pub.size, xxh64, chunks: pub.chunks } : meta })
  const size = pub?.size ?? meta.size
  const st = await lstat(path)
  const reference = pub ? pub.xxh64Segments : meta.xxh64
  if ((opts.mode ?? 'fast') === 'strong' || !reference) {
    const r = await findBad('strong verification')
    if (st.size !== size) return { ...r, ok: false, reason: `size ${st.size}, expected ${size}` }
    return r.ok ? good(by('sha256')) : r
  }
  if (st.size !== size) return { ...(await findBad(`size ${st.size}, expected ${size}`)), ok: false }
  const fastDigest = () => cache.fastDigest(sha, signal)
  let found: FastDigest
  try {
    found = await (opts.digest ?? fastDigest())
  } catch (e) {
    // A block the kernel refuses (fs-verity, a bad sector): find the chunks that hold it, one by one if need be.
    if (!isReadError(e)) throw e
    return { ...(await findBad('a read error (EIO) in the object')), ok: false }
  }
  if (found.size !== size) return { ...(await findBad(`read ${found.size} bytes, expected ${size}`)), ok: false }
  const badSegments: number[] = []
  for (let k = 0; k < segmentCount(size); k++) if (found.xxh64[k] !== reference[k]) badSegments.push(k)
  if (!badSegments.length) return good(by('xxh64'), [...reference])
  const which = `${badSegments.slice(0, 10).join(',')}${badSegments.length > 10 ? ',…' : ''}`
  const r = await findBad(`xxh64 of ${badSegments.length} of ${found.xxh64.length} segment(s) differs (${which})`, chunksInSegments(chunks ?? meta.chunks, badSegments))
  if (!r.ok) return { ...r, ok: false }
  if (pub) {
    // Every chunk of those segments matches the manifest's sha256 while its own xxh64 does not:
    // the publisher contradicts itself. The bytes stand on the sha256s; nothing local is rewritten.
    return { ...good('manifest-sha256', meta.xxh64), reason: `the manifest's xxh64 of segment(s) ${which} disagrees with its chunks' sha256 (which match)` }
  }
  // Every chunk in those segments matches its sha256: the recorded xxh64 was wrong, not the bytes.
  // Only digests computed here may be recorded: a caller's `digest` is trusted for a verdict, not for the record.
  const digest = opts.digest ? (await fastDigest()).xxh64 : found.xxh64
  return { ok: true, verifiedBy: 'metadata-sha256', badChunks: [], chunks: r.chunks ?? meta.chunks, meta: { ...meta, xxh64: digest }, staleXxh64: which }
}
