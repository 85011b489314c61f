/**
 * Fetching an image into the cache (SPEC §6), the contract other parts use:
 *
 *   fetchManifest(url, {publicKey?}) → Manifest
 *   fetchImage({manifest, cache, ...}) → {path, sha256, size, hit, ...}
 *
 * fetchImage returns only a verified object: a cache hit re-verified (fast or
 * strong) against the manifest's digests (never against the metadata next to
 * the object: a file on the cache partition is not the root of trust), or a
 * download whose every chunk and whole sha256 matched the manifest. A damaged cached object is repaired by fetching only its bad
 * chunks; an interrupted download resumes from its verified chunks; chunks
 * present in other cached objects are copied instead of downloaded.
 */
import { IntegrityError, messageOf } from '../core/errors.js'
import { logOp, silentLogger, type Logger } from '../core/log.js'
import type { Manifest } from '../manifest/types.js'
import { PartialObject, demoteToPartial, removePartial } from '../cache/partial.js'
import type { Cache, FastDigest, SealOutcome, VerifiedBy, VerifyMode } from '../cache/store.js'
import { Download } from './download.js'
import { getBytes, type RequestOptions } from './http.js'
import { mirrorList, seededRandom } from './mirrors.js'
import type { ProgressInfo } from './progress.js'
import { DEFAULT_RETRY_POLICY, errorCodes, retrying, type RetryPolicy } from '../core/retry.js'
import type { Sleep } from '../core/clock.js'
import { parseManifest, type ParseManifestOptions } from '../manifest/schema.js'
import { checkArch } from '../manifest/arch.js'
import { hostname } from 'node:os'
import type { HeadBearer } from '../core/head-token.js'
import { faultPoint } from '../core/fault.js'

/** Manifests larger than this are refused (a 2 GiB image at 64 KiB chunks is ~3 MB). */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024

export interface FetchManifestOptions {
  /** PEM (SPKI) ed25519 public key; when given, an unsigned or wrongly signed manifest is refused. */
  publicKey?: string
  signal?: AbortSignal
  log?: Logger
  /** Retry policy (plain data). Default the one every HTTP caller uses (core/retry.ts). */
  retry?: RetryPolicy
  /** The jitter's randomness. Default Math.random. */
  random?: () => number
  /** The wait between attempts (tests record it). Default the real, abortable sleep. */
  sleep?: Sleep
  headersTimeoutMs?: number
  /** The image the manifest must describe (the boot descriptor's pin): checked by parseManifest, the one gate. */
  pinned?: ParseManifestOptions['pinned']
  /** This node's token for the head (sent to the head's own origin only). */
  bearer?: HeadBearer
  /** This machine's architecture: a manifest whose `arch` differs is refused (EARCH) before any image byte is fetched. Unchecked when omitted. */
  arch?: string
  /** This node's id, sent as `X-Boot-Agent-Node` (protocol/node-header.ts). */
  nodeId?: string
}

/** Downloads, parses and (with a key) checks the signature of a manifest; relative URLs resolve against `url`. */
export const fetchManifest = async (url: string, opts: FetchManifestOptions = {}): Promise<Manifest> => {
  const log = opts.log ?? silentLogger()
  const req: RequestOptions = {
    acceptGzip: true,
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.headersTimeoutMs ? { headersTimeoutMs: opts.headersTimeoutMs } : {}),
    ...(opts.bearer ? { bearer: opts.bearer } : {}),
    ...(opts.nodeId ? { nodeId: opts.nodeId } : {}),
  }
  return logOp(log, 'fetch-manifest', { url }, async () => {
    const bytes = await retrying(() => getBytes(url, MAX_MANIFEST_BYTES, req), {
      ...(opts.retry ? { policy: opts.retry } : {}),
      ...(opts.random ? { random: opts.random } : {}),
      ...(opts.sleep ? { sleep: opts.sleep } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      // One line per retry an operator at the prompt sees (info), naming why and how long until the next try, no stack.
      onRetry: (r) =>
        log.info(
          { url, attempt: r.attempt, of: opts.retry?.maxAttempts ?? DEFAULT_RETRY_POLICY.maxAttempts, waitMs: r.waitMs, code: errorCodes(r.error)[0] },
          `manifest fetch failed (${messageOf(r.error)}); retrying in ${(r.waitMs / 1000).toFixed(1)} s (attempt ${r.attempt + 1} of ${opts.retry?.maxAttempts ?? DEFAULT_RETRY_POLICY.maxAttempts})`,
        ),
    })
    const m = parseManifest(bytes, { baseUrl: url, ...(opts.publicKey ? { publicKey: opts.publicKey } : {}), ...(opts.pinned ? { pinned: opts.pinned } : {}) })
    if (opts.arch !== undefined) checkArch(m, opts.arch, url)
    return m
  })
}

export interface FetchImageOptions {
  /** Validated by parseManifest (fetchManifest, buildManifest): relied on here, not checked again. */
  manifest: Manifest
  cache: Cache
  log?: Logger
  signal?: AbortSignal
  /** Objects eviction must keep (the image being booted and the previous one); this image is always kept. */
  pin?: string[]
  /**
   * Re-verification of a cache hit, against the manifest: 'fast' (size + the
   * manifest's `xxh64Segments`; done as strong when the manifest has none) or
   * 'strong' (the manifest's sha256 of every chunk). Default fast.
   */
  verify?: VerifyMode
  /**
   * The cached object's fast digest, started by the caller before this call
   * ({@link Cache.fastDigest}) to overlap the read with its own work; used for
   * a fast re-verification only.
   */
  digest?: Promise<FastDigest>
  /**
   * On a hit, return as soon as the object is verified and record the use
   * (the metadata's lastUsedAt/verifiedAt, rewritten and fsynced) after,
   * still under the object's lock: the result's `recorded` settles when that
   * is done and the lock released. The caller must await it before it exits.
   * Default false (recorded before the return).
   */
  recordLater?: boolean
  /** Called at the progress-log interval with bytes, rate and ETA. */
  onProgress?: (p: ProgressInfo) => void
  /**
   * Seeds this node's mirror order and jitter, and is sent with every
   * request (`X-Boot-Agent-Node`). The boot stage passes the node id; without
   * it the host name seeds the order (the `fetch` command on a running node)
   * and no node id is sent.
   */
  nodeId?: string
  /**
   * Mirrors to try first, in this order (the descriptor's per-group list:
   * rack cache first, head last); the manifest's `urls`, in this node's
   * order, follow as the fallback.
   */
  mirrors?: string[]
  /** Parallel Range requests. Default 1 (DEFAULT_STREAMS). */
  streams?: number
  /** Longest single Range request in bytes. Default 1 GiB (MAX_RANGE_BYTES). */
  maxRangeBytes?: number
  /** Retry policy (plain data). */
  retry?: RetryPolicy
  /** The wait between attempts (tests record it). Default the real, abortable sleep. */
  sleep?: Sleep
  /** Copy chunks from other cached objects (delta). Default true. */
  reuse?: boolean
  headersTimeoutMs?: number
  idleTimeoutMs?: number
  /** This node's token for the head (sent to the head's own origin only, never to a mirror). */
  bearer?: HeadBearer
}

export interface FetchImageResult {
  /** The verified object in the cache. */
  path: string
  sha256: string
  size: number
  /** True when the cache held a verified copy and nothing was fetched. */
  hit: boolean
  /**
   * What the bytes were checked against: a hit's re-verification
   * (`manifest-xxh64`, `manifest-sha256`), or `download` (every chunk's and
   * the whole image's sha256 against the manifest as it was written).
   */
  verifiedBy: VerifiedBy | 'download'
  /** Bytes received over HTTP in this call. */
  bytesDownloaded: number
  /** Bytes copied from other cached objects (delta). */
  bytesReused: number
  /** Bytes of a previous interrupted download (or a damaged object's good chunks) kept after re-verification. */
  bytesResumed: number
  /** Chunks of a damaged cached object that were fetched again. */
  chunksRepaired: number
  /** HTTP requests for image bytes. */
  requests: number
  durationMs: number
  /** With `recordLater` on a hit: the use recorded and the lock released (rejects if recording failed). */
  recorded?: Promise<void>
  /**
   * What sealing the object with fs-verity did in this call (cache/seal.ts):
   * tried after a download and after a hit verified by reading; absent on a
   * hit verified by measurement (sealed already).
   */
  sealed?: SealOutcome
  /** Why a hit the manifest gives an fs-verity digest for was read rather than measured. */
  readBecause?: string
}

/** Manifests (by sha256) already logged as lacking `xxh64Segments`: said once per process, not per fetch. */
const saidNoSegments = new Set<string>()

/** A verified object for `manifest` in `cache`, fetching (only) what is missing. */
export const fetchImage = async (opts: FetchImageOptions): Promise<FetchImageResult> => {
  const { manifest: m, cache } = opts
  const log = (opts.log ?? silentLogger()).child({ image: m.name, sha256: m.sha256 })
  const started = performance.now()
  const nodeId = opts.nodeId ?? hostname()
  const urls = mirrorList(opts.mirrors ?? [], m.urls, nodeId)
  return logOp(log, 'fetch-image', { size: m.size }, async () => {
    const lock = await cache.lock(m.sha256, opts.signal ? { signal: opts.signal } : {})
    let releaseLater = false
    try {
      const verify = opts.verify ?? 'fast'
      if (verify === 'fast' && !m.xxh64Segments && !saidNoSegments.has(m.sha256)) {
        saidNoSegments.add(m.sha256)
        log.warn({}, 'the manifest carries no xxh64Segments (written by an older publisher): a cache hit is checked by the sha256 of every chunk instead (slower); republish it to restore fast verification')
      }
      // The reference is the manifest (the head's word), never the object's own metadata.
      const reference = { size: m.size, chunks: m.chunks, ...(m.xxh64Segments ? { xxh64Segments: m.xxh64Segments } : {}), ...(m.fsverityDigest ? { fsverityDigest: m.fsverityDigest } : {}) }
      const look = await cache.lookup(m.sha256, {
        verify,
        published: reference,
        name: m.name,
        ...(urls[0] ? { url: urls[0] } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.digest ? { digest: opts.digest } : {}),
        ...(opts.recordLater ? { touch: false } : {}),
      })
      if (look.status === 'hit') {
        // Verified by reading, in full: sealed now, so that the next hit is measured (a no-op where fs-verity is not).
        const sealed = look.verifiedBy === 'manifest-fsverity' ? undefined : await cache.seal(m.sha256)
        const hit: FetchImageResult = {
          path: look.path, sha256: m.sha256, size: m.size, hit: true, verifiedBy: look.verifiedBy, bytesDownloaded: 0, bytesReused: 0, bytesResumed: 0, chunksRepaired: 0, requests: 0, durationMs: Math.round(performance.now() - started),
          ...(sealed ? { sealed } : {}), ...(look.readBecause ? { readBecause: look.readBecause } : {}),
        }
        const record = async (): Promise<void> => {
          if (opts.recordLater) await cache.touch(m.sha256, { verified: true, meta: look.meta, name: m.name, ...(urls[0] ? { url: urls[0] } : {}) })
          // A run killed between publishing and cleaning up leaves its temp files (the data file a hard link of the object).
          await removePartial(cache, m.sha256)
        }
        if (!opts.recordLater) {
          await record()
          return hit
        }
        releaseLater = true
        const recorded = record().finally(() => lock.release())
        recorded.catch(() => undefined) // the caller awaits it
        return { ...hit, recorded }
      }
      let trusted: number[] | undefined
      let chunksRepaired = 0
      if (look.status === 'corrupt') {
        if (look.chunks === m.chunks && look.reason !== 'not a regular file') {
          // Keep the good chunks of the damaged object; fetch only the bad ones.
          const bad = new Set(look.badChunks)
          log.warn({ badChunks: look.badChunks.slice(0, 20), count: bad.size, reason: look.reason }, 'cached object is damaged: repairing its bad chunks')
          // A sealed object is never written: its good chunks are copied into a new file (those that read as EIO dropped).
          trusted = await demoteToPartial(cache, m.sha256, m.chunks.filter((c) => !bad.has(c.index)).map((c) => c.index), m.chunks)
          chunksRepaired = m.chunks.length - trusted.length
          faultPoint('repair.demoted')
        } else {
          log.warn({ reason: look.reason }, 'cached object unusable: removing it')
          await cache.remove(m.sha256)
        }
      }
      const partial = await PartialObject.open(cache, m, { log, ...(opts.signal ? { signal: opts.signal } : {}), ...(trusted ? { trusted } : {}) })
      const bytesResumed = partial.verifiedBytes
      let published = false
      try {
        const dl = new Download({
          manifest: m,
          cache,
          partial,
          urls,
          log,
          random: seededRandom(`${nodeId}:${m.sha256}`),
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(opts.pin ? { pin: opts.pin } : {}),
          ...(opts.streams ? { streams: opts.streams } : {}),
          ...(opts.maxRangeBytes ? { maxRangeBytes: opts.maxRangeBytes } : {}),
          ...(opts.retry ? { retry: opts.retry } : {}),
          ...(opts.sleep ? { sleep: opts.sleep } : {}),
          ...(opts.reuse !== undefined ? { reuse: opts.reuse } : {}),
          ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
          ...(opts.headersTimeoutMs ? { headersTimeoutMs: opts.headersTimeoutMs } : {}),
          ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
          ...(opts.bearer ? { bearer: opts.bearer } : {}),
          ...(opts.nodeId ? { nodeId: opts.nodeId } : {}),
        })
        const r = await dl.run()
        if (r.sha256 !== m.sha256) {
          // Every chunk matched yet the whole does not: the manifest contradicts itself.
          await partial.discard()
          throw new IntegrityError({ algorithm: 'sha256', expected: m.sha256, found: r.sha256, url: urls[0], what: `image ${m.name} (chunks match, whole differs: inconsistent manifest)` })
        }
        await partial.close()
        faultPoint('fetch.verified')
        const path = await cache.publish({ from: partial.path, sha256: m.sha256, computedSha256: r.sha256, size: m.size, xxh64: r.xxh64, chunks: m.chunks, name: m.name, urls })
        published = true
        // Every chunk and the whole checked as written: sealed (fs-verity) before anything mounts it.
        const sealed = await cache.seal(m.sha256)
        return {
          sealed,
          path,
          sha256: m.sha256,
          size: m.size,
          hit: false,
          verifiedBy: 'download',
          bytesDownloaded: r.bytesDownloaded,
          bytesReused: r.bytesReused,
          bytesResumed,
          chunksRepaired,
          requests: r.requests,
          durationMs: Math.round(performance.now() - started),
        }
      } finally {
        if (!published) await partial.close()
      }
    } finally {
      if (!releaseLater) await lock.release()
    }
  })
}

