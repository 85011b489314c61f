/**
 * A download in progress: `tmp/<sha>.part` (the image's bytes at their
 * offsets) and `tmp/<sha>.state.json` (the chunks verified and written).
 *
 * The state is only ever written after the data file is fsynced, so a chunk
 * it lists was on disk when it was listed. On resume the listed chunks are
 * re-verified (sha256) before being trusted: an unverified byte is never used.
 */
import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { isErrno } from '../core/errors.js'
import { isReadError } from '../hash/file.js'
import type { Logger } from '../core/log.js'
import type { Chunk } from '../manifest/types.js'
import { fsyncPath, writeFileDurable } from '../core/durable.js'
import { FILE_MODE } from './layout.js'
import { refuseIfMounted } from './pin.js'
import type { Cache } from './store.js'

/** How often the verified-chunk state is made durable during a download. */
export const STATE_PERSIST_INTERVAL_MS = 1000

export interface PartialTarget {
  sha256: string
  size: number
  chunks: Chunk[]
}

/** The state file's text: the chunks of `sha` verified and written. */
const stateText = (sha: string, verified: readonly number[]): string => JSON.stringify({ schema: 1, sha256: sha, verified })

const parseState = (text: string, sha: string, nChunks: number): number[] => {
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v !== 'object' || v === null) return []
    const o = v as { sha256?: unknown; verified?: unknown }
    if (o.sha256 !== sha || !Array.isArray(o.verified)) return []
    return o.verified.filter((n): n is number => Number.isSafeInteger(n) && n >= 0 && n < nChunks)
  } catch {
    return []
  }
}

export class PartialObject {
  readonly path: string
  readonly statePath: string
  readonly target: PartialTarget
  readonly fh: FileHandle
  /** 1 for chunks verified and written to the data file. */
  readonly written: Uint8Array
  private lastPersist = 0
  private dirty = false
  private persisting: Promise<void> | undefined
  /** A persist started by {@link record}, in the background. */
  private background: Promise<void> | undefined
  /** The first failure of a background persist: rethrown by the next record or settle. */
  private backgroundError: unknown

  private constructor(path: string, statePath: string, target: PartialTarget, fh: FileHandle) {
    this.path = path
    this.statePath = statePath
    this.target = target
    this.fh = fh
    this.written = new Uint8Array(target.chunks.length)
  }

  /**
   * Opens the partial download of `target`, resuming what a previous run
   * verified (re-checked here), or starting an empty one (`wx`). Call with
   * the object's lock held. `trusted` lists chunks the caller verified
   * against this very file a moment ago (a demoted cache object).
   */
  static async open(cache: Cache, target: PartialTarget, opts: { log: Logger; signal?: AbortSignal; trusted?: readonly number[] }): Promise<PartialObject> {
    const path = cache.partPath(target.sha256)
    const statePath = cache.statePath(target.sha256)
    let listed: number[] = []
    let fh: FileHandle | undefined
    try {
      listed = parseState(await readFile(statePath, 'utf8'), target.sha256, target.chunks.length)
      fh = await open(path, 'r+')
    } catch (e) {
      if (!isErrno(e, 'ENOENT')) throw e
    }
    if (!fh) {
      // No usable state: any leftover data file is unverified, start over.
      await rm(path, { force: true })
      await rm(statePath, { force: true })
      fh = await open(path, 'wx+', FILE_MODE)
      listed = []
    }
    const p = new PartialObject(path, statePath, target, fh)
    try {
      const st = await fh.stat()
      if (st.size !== target.size) await fh.truncate(target.size)
      const trusted = new Set(opts.trusted ?? [])
      const recheck = listed.filter((i) => !trusted.has(i)).sort((a, b) => a - b)
      for (const i of trusted) if (i >= 0 && i < target.chunks.length) p.written[i] = 1
      if (recheck.length) {
        const chunks = recheck.map((i) => target.chunks[i]!)
        const got = await cache.hasher(path, chunks, opts.signal ? { signal: opts.signal } : {})
        let good = 0
        chunks.forEach((c, k) => {
          if (got[k] === c.sha256) {
            p.written[c.index] = 1
            good++
          }
        })
        opts.log.info({ sha256: target.sha256, listed: recheck.length, good }, 'resuming partial download')
      }
      return p
    } catch (e) {
      await fh.close().catch(() => undefined)
      throw e
    }
  }

  get verifiedBytes(): number {
    let n = 0
    this.target.chunks.forEach((c, i) => {
      if (this.written[i]) n += c.size
    })
    return n
  }

  missing(): number[] {
    const out: number[] = []
    for (let i = 0; i < this.written.length; i++) if (!this.written[i]) out.push(i)
    return out
  }

  /** Marks chunks as verified and written (durable at the next persist). */
  markWritten(indexes: Iterable<number>): void {
    for (const i of indexes) this.written[i] = 1
    this.dirty = true
  }

  /** Makes the state durable if it changed and the interval passed (or `force`). */
  async persist(force = false): Promise<void> {
    if (this.persisting) await this.persisting
    if (!this.dirty) return
    const now = Date.now()
    if (!force && now - this.lastPersist < STATE_PERSIST_INTERVAL_MS) return
    this.dirty = false
    this.lastPersist = now
    const verified: number[] = []
    for (let i = 0; i < this.written.length; i++) if (this.written[i]) verified.push(i)
    this.persisting = (async () => {
      await this.fh.datasync() // data before the state that vouches for it
      await writeFileDurable(this.statePath, stateText(this.target.sha256, verified))
    })()
    try {
      await this.persisting
    } finally {
      this.persisting = undefined
    }
  }

  /**
   * Records chunks verified and written, and makes the state durable in the
   * background (a persist's fsync of the data file would otherwise stall a
   * writer every second); a failure surfaces at the next record or at
   * {@link settle}.
   */
  async record(indexes: number[]): Promise<void> {
    if (this.backgroundError !== undefined) throw this.backgroundError
    this.markWritten(indexes)
    this.background ??= this.persist()
      .catch((e: unknown) => {
        this.backgroundError ??= e
      })
      .finally(() => {
        this.background = undefined
      })
  }

  /** Waits for a background persist ({@link record}); rethrows its failure. */
  async settle(): Promise<void> {
    await this.background
    if (this.backgroundError !== undefined) throw this.backgroundError
  }

  async close(): Promise<void> {
    if (this.persisting) await this.persisting.catch(() => undefined)
    await this.fh.close().catch(() => undefined)
  }

  /** Deletes the partial download (data and state). */
  async discard(): Promise<void> {
    await this.close()
    await rm(this.path, { force: true })
    await rm(this.statePath, { force: true })
  }
}

/**
 * Moves a damaged cached object out of objects/ into tmp/ as the partial
 * download of `sha` whose chunks `goodChunks` are known good (verified a
 * moment ago), so the downloader fetches only the others. Call with the
 * object's lock held. Returns the chunks kept (all of `goodChunks`, but for
 * a sealed object's that read as EIO).
 *
 * An object sealed with fs-verity (seal.ts) cannot be opened for writing:
 * its good chunks are copied into a new file, which is then repaired,
 * verified, published and sealed like a download; the old one is unlinked.
 */
export const demoteToPartial = async (cache: Cache, sha: string, goodChunks: readonly number[], chunks: readonly Chunk[]): Promise<number[]> => {
  const obj = cache.objectPath(sha)
  // The repair writes into this very file (renamed), or replaces it: never under a running root.
  await refuseIfMounted(obj, sha, 'repaired in place')
  const part = cache.partPath(sha)
  await rm(part, { force: true })
  await rm(cache.statePath(sha), { force: true })
  const sealed = (await cache.sealer.measure(obj)).sealed
  const kept = sealed ? await copyChunks(obj, part, goodChunks.map((i) => chunks[i]!)) : [...goodChunks]
  if (sealed) await rm(obj, { force: true })
  else await rename(obj, part)
  await rm(cache.metaPath(sha), { force: true })
  await writeFileDurable(cache.statePath(sha), stateText(sha, kept))
  await fsyncPath(dirname(obj))
  return kept
}

/** Copies `chunks` of `from` into a new file `to` (same offsets, fsynced); the indexes copied (a chunk reading as EIO is left out). */
const copyChunks = async (from: string, to: string, chunks: readonly Chunk[]): Promise<number[]> => {
  const src = await open(from, 'r')
  const dst = await open(to, 'wx', FILE_MODE)
  const kept: number[] = []
  try {
    for (const c of chunks) {
      const buf = Buffer.allocUnsafe(c.size)
      try {
        await src.read(buf, 0, c.size, c.offset)
      } catch (e) {
        if (isReadError(e)) continue // fs-verity refused a block of it: fetched like the bad ones
        throw e
      }
      await dst.write(buf, 0, c.size, c.offset)
      kept.push(c.index)
    }
    await dst.sync()
  } finally {
    await src.close()
    await dst.close()
  }
  return kept
}

/** Removes a download in progress of `sha` (data and state). Call with the lock held. */
export const removePartial = async (cache: Cache, sha: string): Promise<void> => {
  await rm(cache.partPath(sha), { force: true })
  await rm(cache.statePath(sha), { force: true })
}
