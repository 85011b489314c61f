/**
 * The content-addressed image cache on a directory (SPEC §5; layout in
 * layout.ts). Objects are named by their sha256 and published atomically;
 * every lookup re-verifies the bytes before they are used (fast: size + xxh64
 * of every 64 MiB segment; strong: sha256 of every chunk); corrupt chunks are
 * found and handed to the downloader so only they are fetched again.
 *
 * Nothing on the cache disk is trusted blindly: symlinks, foreign files and
 * malformed metadata are ignored, logged and returned as problems, never
 * followed.
 *
 * Here: open, lookup, publish, the metadata records. Elsewhere, behind thin
 * methods: verify.ts (verdicts only), walk.ts (the one walk), space.ts
 * (eviction, free space), donors.ts, partial.ts (downloads in progress).
 *
 * Over 400 lines: one room, the Cache class every caller holds. What is left
 * here is its lifecycle (open), lookup and publish under the object lock, and
 * the metadata records those two write; each other job is a thin method over
 * its own file.
 */
import { lstatSync } from 'node:fs'
import { chmod, link, lstat, mkdir, readFile, rm, open } from 'node:fs/promises'
import { join } from 'node:path'
import { BootAgentError, IntegrityError, SizeError, isErrno } from '../core/errors.js'
import { silentLogger, type Logger } from '../core/log.js'
import type { Chunk } from '../manifest/types.js'
import type { EvictionGoal } from './evict.js'
import { fsyncPath, writeFileDurable } from '../core/durable.js'
import { faultPoint } from '../core/fault.js'
import { hashRangesParallel, type RangeHasher } from '../hash/file.js'
import { xxh64Segments } from '../hash/segments.js'
import { inspectCacheDir, refuseToOpen } from './cache-dir.js'
import { DIR_MODE, SHA256_HEX, lockPath, metaPath, objectPath, objectsRoot, partPath, statePath, tmpDir } from './layout.js'
import { acquireLock, type Lock, type LockOptions } from '../core/lock.js'
import { META_SCHEMA, parseObjectMeta, remember, segmentCount, serializeObjectMeta, type ObjectMeta } from './meta.js'
import { evictObjects, freeBytesAt, reserveSpace, type ReserveOptions } from './space.js'
import { refuseIfMounted } from './pin.js'
import { Sealer, type SealOutcome, type SealState } from './seal.js'
import { verifyObject, type FastDigest, type PublishedDigests, type VerifiedBy, type VerifyMode, type VerifyOptions, type VerifyResult } from './verify.js'
import { listObjects, walkObjects, type CachedObject, type CacheProblem } from './walk.js'
import { makeDir } from '../core/make-dir.js'

export type { FastDigest, PublishedDigests, VerifiedBy, VerifyMode, VerifyResult } from './verify.js'
export type { CachedObject, CacheProblem } from './walk.js'
export type { ReserveOptions } from './space.js'
export type { SealOutcome, SealState } from './seal.js'

export type LookupResult =
  | { status: 'hit'; path: string; meta: ObjectMeta; verifiedBy: VerifiedBy; sealed?: boolean; readBecause?: string }
  | { status: 'miss' }
  | { status: 'corrupt'; path: string; reason: string; badChunks: number[]; chunks?: Chunk[] }

export interface CacheOptions {
  log?: Logger
  /** Injectable clock. */
  now?: () => Date
  /** sha256 of file ranges; a worker pool makes strong verification parallel. */
  hasher?: RangeHasher
  /** Threads computing the fast digest (xxh64 per segment), this one included; default os.availableParallelism(), at most 8. */
  verifyThreads?: number
  /**
   * A reader (`verify`, `cache ls`/`gc`, the self-check): opened as it is, nothing created, no
   * mode changed; ENOCACHE unless `dir` is a cache or empty (cache-dir.ts). Default: a writer.
   */
  mustExist?: boolean
  /** fs-verity's sealing and measuring (seal.ts). Default one running the `fsverity` tool. */
  sealer?: Sealer
}

export interface PublishInput {
  /** The finished temp file (under tmp/), fsynced by the writer or not. */
  from: string
  sha256: string
  /** The sha256 the writer computed over the bytes it wrote. */
  computedSha256: string
  size: number
  /** xxh64 (hex) of each 64 MiB segment of the bytes written (meta.ts). */
  xxh64: string[]
  chunks: Chunk[]
  name?: string
  urls?: string[]
}

const isErr = (e: unknown) => isErrno(e, 'ENOENT', 'ENOTDIR')

/** `d` is a directory (not a symlink to one) with the cache's mode; any doubt (missing, error) is false. */
const isPrivateDir = (d: string): boolean => {
  try {
    const st = lstatSync(d, { throwIfNoEntry: false })
    return st !== undefined && st.isDirectory() && (st.mode & 0o7777) === DIR_MODE
  } catch {
    return false
  }
}

export class Cache {
  readonly dir: string
  readonly log: Logger
  readonly now: () => Date
  readonly hasher: RangeHasher
  readonly verifyThreads: number | undefined
  /** Seals objects and measures sealed ones (fs-verity, seal.ts). */
  readonly sealer: Sealer
  /** Problems met so far (also logged). */
  readonly problems: CacheProblem[] = []

  private constructor(dir: string, opts: CacheOptions) {
    this.dir = dir
    this.log = opts.log ?? silentLogger()
    this.now = opts.now ?? (() => new Date())
    this.hasher = opts.hasher ?? hashRangesParallel
    this.verifyThreads = opts.verifyThreads
    this.sealer = opts.sealer ?? new Sealer()
  }

  /** What {@link Cache.open} would refuse `dir` for, checked without creating anything (a missing directory is no refusal). */
  static async refusal(dir: string): Promise<BootAgentError | undefined> {
    return refuseToOpen(dir, await inspectCacheDir(dir), false)
  }

  /** Opens a cache on `dir`, root-only; a writer never takes over a directory with other files or a shared one (cache-dir.ts). */
  static async open(dir: string, opts: CacheOptions = {}): Promise<Cache> {
    const dirs = [dir, join(dir, 'objects'), objectsRoot(dir), tmpDir(dir)]
    // An existing cache (every boot after the first): four lstat calls on this thread, not 12
    // round-trips through libuv's pool (mkdir, lstat, chmod each: 20–50 ms of a `verify` here
    // while workers start), and no inode write to chmod 0700 what is 0700 already.
    if (dirs.every(isPrivateDir)) return new Cache(dir, opts)
    const refusal = refuseToOpen(dir, await inspectCacheDir(dir), opts.mustExist === true)
    if (refusal) throw refusal
    if (opts.mustExist) return new Cache(dir, opts) // as it is: nothing created, no mode changed
    for (const d of dirs) {
      await makeDir(d, DIR_MODE)
      const st = await lstat(d)
      if (!st.isDirectory()) throw new BootAgentError('ECACHE', `cache path ${d} is not a directory (symlinks are not followed)`, { path: d })
      await chmod(d, DIR_MODE)
    }
    return new Cache(dir, opts)
  }

  objectPath(sha: string): string {
    return objectPath(this.dir, sha)
  }
  metaPath(sha: string): string {
    return metaPath(this.dir, sha)
  }
  partPath(sha: string): string {
    return partPath(this.dir, sha)
  }
  statePath(sha: string): string {
    return statePath(this.dir, sha)
  }
  get tmpDir(): string {
    return tmpDir(this.dir)
  }

  /** Records (once) and logs something found on the cache disk that the cache did not write. */
  report(path: string, problem: string): void {
    if (this.problems.some((p) => p.path === path && p.problem === problem)) return
    this.problems.push({ path, problem })
    this.log.warn({ path, problem }, `cache: ignoring ${path}: ${problem}`)
  }

  /** Takes the write lock of one object (waits, bounded, while another live process holds it). */
  lock(sha: string, opts: LockOptions = {}): Promise<Lock> {
    assertSha(sha)
    return acquireLock(lockPath(this.dir, sha), {
      ...opts,
      onWait: (o) => {
        this.log.info({ sha256: sha, pid: o.pid }, 'cache: waiting for another process writing this object')
        opts.onWait?.(o)
      },
    }).catch((e: unknown) => {
      // Named: a read-only cache was EUNEXPECTED "EROFS" on a lock file, and `cache gc` took it for a writer's lock.
      throw isErrno(e, 'EROFS') ? new BootAgentError('ECACHE', `cache ${this.dir} is on a read-only file system: remount it read-write (verify and cache ls only read it)`, { path: this.dir }, { cause: e }) : e
    })
  }

  /** The object's metadata, or undefined (missing or malformed: reported). */
  async readMeta(sha: string): Promise<ObjectMeta | undefined> {
    assertSha(sha)
    const p = this.metaPath(sha)
    let text: string
    try {
      const st = await lstat(p)
      if (!st.isFile()) {
        this.report(p, st.isSymbolicLink() ? 'metadata is a symlink' : 'metadata is not a regular file')
        return undefined
      }
      text = await readFile(p, 'utf8')
    } catch (e) {
      if (isErr(e)) return undefined
      throw e
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      this.report(p, 'metadata is not JSON')
      return undefined
    }
    const meta = parseObjectMeta(json, sha)
    if (typeof meta === 'string') {
      this.report(p, `malformed metadata: ${meta}`)
      return undefined
    }
    return meta
  }

  /** 'file' when a regular file is at the object path, 'none', or 'foreign' (reported). */
  async objectKind(sha: string): Promise<'file' | 'none' | 'foreign'> {
    const p = this.objectPath(sha)
    try {
      const st = await lstat(p)
      if (st.isFile()) return 'file'
      this.report(p, st.isSymbolicLink() ? 'object is a symlink' : 'object is not a regular file')
      return 'foreign'
    } catch (e) {
      if (isErr(e)) return 'none'
      throw e
    }
  }

  /**
   * Re-verifies one object (verify.ts): a verdict, nothing written. With
   * `published` (the manifest's digests) that is the only reference, else the
   * metadata (corruption, not tampering). `meta`: this object's metadata as
   * {@link list} or {@link readMeta} just read it (not read twice). `digest`:
   * its fast digest, started earlier by the caller (fast mode only). A caller
   * that keeps the metadata right records the verdict ({@link recordVerdict}).
   */
  verify(sha: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
    return verifyObject(this, sha, opts)
  }

  /** The kernel's measured fs-verity digest of object `sha`, or why there is none (seal.ts). */
  measure(sha: string): Promise<SealState> {
    assertSha(sha)
    return this.sealer.measure(this.objectPath(sha))
  }

  /**
   * Seals object `sha` with fs-verity (seal.ts): only after a full
   * verification (a download, a hit verified by reading), and never while a
   * writer has it open. The outcome is logged and returned, never thrown.
   */
  async seal(sha: string): Promise<SealOutcome> {
    assertSha(sha)
    const outcome = await this.sealer.seal(this.objectPath(sha))
    this.log.info({ sha256: sha, outcome }, `cache: object ${outcome}`)
    return outcome
  }

  /**
   * Writes what a verdict found wrong in the metadata itself: the recorded
   * xxh64 of segments whose chunks all match (`staleXxh64`), replaced by the
   * digests of the bytes. Nothing for any other verdict.
   */
  async recordVerdict(sha: string, v: VerifyResult): Promise<void> {
    if (v.staleXxh64 === undefined || !v.meta) return
    this.report(this.metaPath(sha), `recorded xxh64 of segment(s) ${v.staleXxh64} is wrong (bytes match every chunk in them); rewritten`)
    await writeFileDurable(this.metaPath(sha), serializeObjectMeta(v.meta))
  }

  /**
   * Reads the object's fast digest (xxh64 of every segment, on every core):
   * what fast verification compares with the metadata. Started by a caller
   * that wants to overlap it with other work and pass it to lookup() or
   * verify() as `digest`; the caller checks first that a regular file is at
   * the object path (the read follows nothing else the cache did not write).
   * `offThread`: hash on worker threads only, so that this thread's event
   * loop stays free for the caller's own work meanwhile.
   */
  fastDigest(sha: string, opts: { signal?: AbortSignal; offThread?: boolean } = {}): Promise<FastDigest> {
    assertSha(sha)
    return xxh64Segments(this.objectPath(sha), {
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.offThread ? { offThread: true } : {}),
      ...(this.verifyThreads ? { threads: this.verifyThreads } : {}),
    })
  }

  /**
   * A verified object or why not, judged against `published` (the
   * manifest's digests) when given. A hit updates lastUsedAt (and the names
   * and URLs seen); a corrupt object is recorded in its metadata
   * (corruptChunks) and left for the caller to repair. `digest`: the
   * object's fast digest, started earlier by the caller ({@link fastDigest}),
   * used in fast mode instead of reading the object again. `touch: false`:
   * a hit is not recorded here (meta is the verified metadata); the caller
   * records it with {@link touch} (verified: true) while it still holds the
   * object's lock.
   */
  async lookup(
    sha: string,
    opts: { verify?: VerifyMode; published?: PublishedDigests; signal?: AbortSignal; name?: string; url?: string; digest?: Promise<FastDigest>; touch?: boolean } = {},
  ): Promise<LookupResult> {
    assertSha(sha)
    const kind = await this.objectKind(sha)
    if (kind === 'none') return { status: 'miss' }
    const path = this.objectPath(sha)
    if (kind === 'foreign') return { status: 'corrupt', path, reason: 'not a regular file', badChunks: [] }
    const v = await this.verify(sha, {
      mode: opts.verify ?? 'fast',
      ...(opts.published ? { published: opts.published } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.digest ? { digest: opts.digest } : {}),
    })
    await this.recordVerdict(sha, v)
    if (!v.ok) {
      this.log.warn({ sha256: sha, reason: v.reason, badChunks: v.badChunks.length, ...(v.readBecause ? { readBecause: v.readBecause } : {}) }, 'cache: object failed re-verification')
      if (v.badChunks.length) await this.markCorrupt(sha, v.badChunks).catch(() => undefined)
      return { status: 'corrupt', path, reason: v.reason ?? 'failed verification', badChunks: v.badChunks, ...(v.chunks ? { chunks: v.chunks } : {}) }
    }
    if (v.reason) this.log.warn({ sha256: sha, reason: v.reason }, 'cache: object verified, with a remark')
    const verifiedBy = v.verifiedBy ?? (opts.published ? 'manifest-sha256' : 'metadata-sha256')
    const sealing = { ...(v.sealed !== undefined ? { sealed: v.sealed } : {}), ...(v.readBecause ? { readBecause: v.readBecause } : {}) }
    if (opts.touch === false && v.meta) return { status: 'hit', path, meta: v.meta, verifiedBy, ...sealing }
    const meta = await this.touch(sha, { verified: true, ...(v.meta ? { meta: v.meta } : {}), ...(opts.name ? { name: opts.name } : {}), ...(opts.url ? { url: opts.url } : {}) })
    return { status: 'hit', path, meta: meta!, verifiedBy, ...sealing }
  }

  /**
   * Records a use (and optionally a verification, a name, a URL). `meta`: the
   * object's metadata just read (by verify), not read again.
   */
  async touch(sha: string, opts: { verified?: boolean; name?: string; url?: string; meta?: ObjectMeta } = {}): Promise<ObjectMeta | undefined> {
    const meta = opts.meta?.sha256 === sha ? opts.meta : await this.readMeta(sha)
    if (!meta) return undefined
    const now = this.now().toISOString()
    const next: ObjectMeta = {
      ...meta,
      lastUsedAt: now,
      ...(opts.verified ? { verifiedAt: now } : {}),
      names: remember(meta.names, opts.name),
      urls: remember(meta.urls, opts.url),
    }
    if (opts.verified) delete next.corruptChunks
    await writeFileDurable(this.metaPath(sha), serializeObjectMeta(next))
    return next
  }

  /** Records chunks found corrupt on disk (e.g. by the daemon after a SQUASHFS error). */
  async markCorrupt(sha: string, chunkIndexes: readonly number[]): Promise<void> {
    const meta = await this.readMeta(sha)
    if (!meta) return
    const valid = chunkIndexes.filter((i) => Number.isSafeInteger(i) && i >= 0 && i < meta.chunks.length)
    const set = [...new Set([...(meta.corruptChunks ?? []), ...valid])].sort((a, b) => a - b)
    await writeFileDurable(this.metaPath(sha), serializeObjectMeta({ ...meta, corruptChunks: set }))
  }

  /**
   * Publishes a finished temp file as object `sha256`: checks size and the
   * writer's digest, fsyncs, writes the metadata, then links the object into
   * place without clobbering (a foreign thing at that name is removed, it
   * was not followed) and fsyncs the directories. Call with the lock held.
   */
  async publish(input: PublishInput): Promise<string> {
    const { sha256: sha } = input
    assertSha(sha)
    if (input.computedSha256 !== sha) {
      throw new IntegrityError({ algorithm: 'sha256', expected: sha, found: input.computedSha256, what: 'image', context: { path: input.from } })
    }
    if (input.xxh64.length !== segmentCount(input.size)) {
      throw new TypeError(`publish: ${input.xxh64.length} xxh64 segment digest(s) for ${input.size} bytes, expected ${segmentCount(input.size)}`)
    }
    const fh = await open(input.from, 'r+')
    try {
      const st = await fh.stat()
      if (st.size !== input.size) throw new SizeError({ expected: input.size, found: st.size, what: 'image', context: { path: input.from } })
      await fh.chmod(0o600)
      await fh.sync()
    } finally {
      await fh.close()
    }
    const obj = this.objectPath(sha)
    const shard = join(obj, '..')
    await mkdir(shard, { recursive: true, mode: DIR_MODE })
    const now = this.now().toISOString()
    const old = await this.readMeta(sha)
    const meta: ObjectMeta = {
      schema: META_SCHEMA,
      size: input.size,
      sha256: sha,
      xxh64: input.xxh64,
      chunks: input.chunks,
      verifiedAt: now,
      lastUsedAt: now,
      names: remember(old?.names ?? [], input.name),
      urls: (input.urls ?? []).reduce((l, u) => remember(l, u), old?.urls ?? []),
    }
    // Metadata first: a crash between the two leaves metadata without an
    // object (a miss, cleaned up later), never an object without metadata.
    await writeFileDurable(this.metaPath(sha), serializeObjectMeta(meta))
    faultPoint('cache.publish.meta')
    try {
      await link(input.from, obj)
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e
      // Under the lock, whatever is there failed lookup: replace it (unlink never follows a symlink).
      this.report(obj, 'replaced by a freshly verified object')
      await rm(obj, { force: true, recursive: false })
      await link(input.from, obj)
    }
    faultPoint('cache.publish.linked')
    await rm(input.from, { force: true })
    await rm(this.statePath(sha), { force: true })
    await fsyncPath(shard)
    await fsyncPath(this.tmpDir)
    this.log.info({ sha256: sha, size: input.size, path: obj }, 'cache: published object')
    return obj
  }

  /**
   * The regular files in objects/ named as objects, without reading their
   * metadata or reporting anything (list() does both): so that a caller can
   * start hashing them before list() has read the metadata.
   */
  async objectFiles(): Promise<{ sha256: string; path: string }[]> {
    return (await walkObjects(this.dir)).flatMap((e) => (e.kind === 'object' ? [{ sha256: e.sha256, path: e.path }] : []))
  }

  /** Every object with valid metadata, and the problems met on the way. */
  list(): Promise<{ objects: CachedObject[]; problems: CacheProblem[] }> {
    return listObjects(this)
  }

  /**
   * Removes least-recently-used objects (never pinned ones, never one
   * another process is writing) until the goal is met (space.ts). Returns what was removed.
   */
  evict(goal: EvictionGoal): Promise<CachedObject[]> {
    return evictObjects(this, goal)
  }

  /**
   * The one call for space: room for `bytes` more bytes, evicting
   * least-recently-used unpinned objects if need be (space.ts), or
   * CacheFullError. Returns the objects evicted.
   */
  reserve(bytes: number, opts: ReserveOptions = {}): Promise<CachedObject[]> {
    return reserveSpace(this, bytes, opts)
  }

  /** Removes one object and its metadata (object first: never an object without metadata). EPINNED while it is mounted (pin.ts). */
  async remove(sha: string): Promise<void> {
    assertSha(sha)
    await refuseIfMounted(this.objectPath(sha), sha, 'removed')
    await rm(this.objectPath(sha), { force: true })
    await rm(this.metaPath(sha), { force: true })
    await fsyncPath(join(this.objectPath(sha), '..')).catch(() => undefined)
  }

  /** Bytes available to us on the cache's file system. */
  freeBytes(): Promise<number> {
    return freeBytesAt(this.dir)
  }
}

const assertSha = (sha: string): void => {
  if (!SHA256_HEX.test(sha)) throw new TypeError(`not a lower-case hex sha256: ${JSON.stringify(sha)}`)
}

