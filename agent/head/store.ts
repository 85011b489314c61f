/**
 * The head node's image store: a directory of images by content digest, their
 * manifests, and image names that point at digests (SPEC §10).
 *
 * ```
 * <store>/objects/sha256/ab/cdef…          image bytes, read-only, never replaced in place
 * <store>/objects/sha256/ab/cdef….json     what was published: size, arch, format, file identity
 * <store>/manifests/sha256/ab/cdef….json   the manifest served for that digest
 * <store>/names/<name>/history.jsonl       every digest the name ever pointed at (append-only, whole lines, fsynced)
 * <store>/names/<name>/current.json        the digest the name points at now (atomic rename)
 * <store>/names/<name>/.lock               held (pid inside) while a publish moves the name
 * <store>/tmp/                             publishes in progress
 * ```
 *
 * A digest's bytes are written once (temp → fsync → link without clobbering →
 * fsync dir). Moving a name is one atomic rename of `current.json`, after the
 * history line is on disk, so the history always includes the current digest.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { chmod, link, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { isErrno, ManifestError, ConfigError } from '../core/errors.js'
import { appendDurable, fsyncPath, namePath, writeAll, writeFileDurable } from '../core/durable.js'
import { LockedError, withLock } from '../core/lock.js'
import type { Manifest } from '../manifest/types.js'
import { type Architecture, isSafeName, isSha256, nameProblem, normaliseArch } from './names.js'
import { makeDir } from '../core/make-dir.js'

/** What the store knows about one digest's bytes. */
export interface ObjectRecord {
  schema: 1
  sha256: string
  size: number
  arch: Architecture
  format: string
  /** ISO time the bytes were first stored. */
  storedAt: string
  /**
   * Identity of the file right after it was stored: a later stat that differs
   * means someone wrote the object in place behind the store's back.
   */
  file: { size: number; mtimeMs: number; ino: number }
}

/** One line of a name's history. */
export interface NameEntry {
  name: string
  sha256: string
  size: number
  arch: Architecture
  /** ISO time the name was moved to this digest. */
  time: string
  /** The digest the name pointed at before, if any. */
  previous?: string
}

/** A change of the store object's file since it was stored. */
export interface ObjectDrift {
  sha256: string
  expected: ObjectRecord['file']
  found: { size: number; mtimeMs: number; ino: number } | 'missing'
}

const shardPath = (root: string, sha256: string, suffix = ''): string =>
  join(root, 'sha256', sha256.slice(0, 2), sha256.slice(2) + suffix)

const readJson = async (path: string): Promise<unknown> => {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return undefined
    throw e
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

const parseNameEntry = (v: unknown): NameEntry | undefined => {
  if (!isRecord(v)) return undefined
  const arch = normaliseArch(v.arch)
  if (!isSafeName(v.name) || !isSha256(v.sha256) || typeof v.size !== 'number' || !arch || typeof v.time !== 'string') return undefined
  return {
    name: v.name,
    sha256: v.sha256,
    size: v.size,
    arch,
    time: v.time,
    ...(isSha256(v.previous) ? { previous: v.previous } : {}),
  }
}

const parseObjectRecord = (v: unknown): ObjectRecord | undefined => {
  if (!isRecord(v) || !isRecord(v.file)) return undefined
  const arch = normaliseArch(v.arch)
  const f = v.file
  if (!isSha256(v.sha256) || typeof v.size !== 'number' || !arch) return undefined
  if (typeof f.size !== 'number' || typeof f.mtimeMs !== 'number' || typeof f.ino !== 'number') return undefined
  return {
    schema: 1,
    sha256: v.sha256,
    size: v.size,
    arch,
    format: typeof v.format === 'string' ? v.format : 'squashfs',
    storedAt: typeof v.storedAt === 'string' ? v.storedAt : '',
    file: { size: f.size, mtimeMs: f.mtimeMs, ino: f.ino },
  }
}

export interface StoreObjectResult {
  sha256: string
  size: number
  /** False when identical bytes were already stored (nothing written). */
  created: boolean
}

export class ImageStore {
  readonly dir: string

  constructor(dir: string) {
    this.dir = dir
  }

  objectPath(sha256: string): string {
    return shardPath(join(this.dir, 'objects'), sha256)
  }

  private recordPath(sha256: string): string {
    return shardPath(join(this.dir, 'objects'), sha256, '.json')
  }

  manifestPath(sha256: string): string {
    return shardPath(join(this.dir, 'manifests'), sha256, '.json')
  }

  private nameDir(name: string): string {
    const problem = nameProblem(name)
    if (problem) throw new ConfigError('name', `image name ${JSON.stringify(name)} ${problem}`)
    return join(this.dir, 'names', name)
  }

  async init(): Promise<void> {
    for (const d of ['objects', 'manifests', 'names', 'tmp']) await makeDir(join(this.dir, d), 0o755)
  }

  /**
   * Copies `imagePath` into the store under its sha256, computed while
   * copying. Existing bytes under that digest are kept when they still hash
   * right; when they do not (someone wrote into the store), the bad file is
   * moved to `quarantine/` and the good copy linked in its place — never
   * written into.
   */
  async storeObject(imagePath: string, opts: { arch: Architecture; format?: string; signal?: AbortSignal; onProgress?: (bytesDone: number) => void }): Promise<StoreObjectResult> {
    await this.init()
    const tmp = join(this.dir, 'tmp', `publish-${process.pid}-${randomBytes(6).toString('hex')}`)
    const hash = createHash('sha256')
    let size = 0
    let format = opts.format
    const out = await open(tmp, 'wx', 0o644)
    try {
      try {
        for await (const chunk of createReadStream(imagePath, { highWaterMark: 4 << 20, signal: opts.signal })) {
          const buf = chunk as Buffer
          // squashfs superblocks start with the magic `hsqs` (little-endian 0x73717368).
          if (size === 0 && format === undefined) format = buf.subarray(0, 4).toString('latin1') === 'hsqs' ? 'squashfs' : 'raw'
          hash.update(buf)
          size += buf.length
          await writeAll(out, buf).catch((e: unknown) => Promise.reject(namePath(e, tmp)))
          opts.onProgress?.(size)
        }
        await out.sync().catch((e: unknown) => Promise.reject(namePath(e, tmp)))
      } finally {
        await out.close()
      }
      const sha256 = hash.digest('hex')
      const dest = this.objectPath(sha256)
      await makeDir(dirname(dest))
      let created = true
      if (await this.exists(dest)) {
        if ((await hashFile(dest, opts.signal)) === sha256) {
          created = false
        } else {
          const q = join(this.dir, 'quarantine')
          await makeDir(q)
          await rename(dest, join(q, `${sha256}.${Date.now()}`))
        }
      }
      if (created) {
        await chmod(tmp, 0o444)
        // link() fails with EEXIST instead of clobbering: a concurrent publish
        // of the same bytes wins the race and ours is simply dropped.
        try {
          await link(tmp, dest)
        } catch (e) {
          if (!isErrno(e, 'EEXIST')) throw e
          created = false
        }
        await fsyncPath(dirname(dest))
      }
      if (created || !(await this.objectRecord(sha256))) {
        const st = await stat(dest)
        const record: ObjectRecord = {
          schema: 1,
          sha256,
          size,
          arch: opts.arch,
          format: format ?? 'raw',
          storedAt: new Date().toISOString(),
          file: { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino },
        }
        await writeFileDurable(this.recordPath(sha256), JSON.stringify(record, null, 2) + '\n')
      }
      return { sha256, size, created }
    } finally {
      await rm(tmp, { force: true })
    }
  }

  /** Writes (or atomically replaces) the manifest served for `manifest.sha256`. */
  async writeManifest(manifest: Manifest, text: string): Promise<void> {
    if (!isSha256(manifest.sha256)) throw new ManifestError('sha256', 'is not a lower-case hex sha256')
    const path = this.manifestPath(manifest.sha256)
    await makeDir(dirname(path))
    await writeFileDurable(path, text)
  }

  /**
   * Points `name` at `sha256`: appends to the name's history (fsynced), then
   * replaces `current.json` atomically. Returns the new entry.
   */
  async moveName(name: string, target: { sha256: string; size: number; arch: Architecture }, now = new Date()): Promise<NameEntry & { unchanged?: true }> {
    const dir = this.nameDir(name)
    await makeDir(dir)
    // Two publishers of one name must not interleave (history order = move order).
    return withNameLock(dir, () => this.moveNameLocked(dir, name, target, now))
  }

  private async moveNameLocked(dir: string, name: string, target: { sha256: string; size: number; arch: Architecture }, now: Date): Promise<NameEntry & { unchanged?: true }> {
    const prev = await this.current(name)
    // Already there (a re-publish of the same bytes): no history line whose `previous` is itself.
    if (prev?.sha256 === target.sha256) return { ...prev, unchanged: true }
    const entry: NameEntry = {
      name,
      sha256: target.sha256,
      size: target.size,
      arch: target.arch,
      time: now.toISOString(),
      ...(prev ? { previous: prev.sha256 } : {}),
    }
    // Whole or not at all (a full disk leaves no torn line for the next entry to be glued onto).
    await appendDurable(join(dir, 'history.jsonl'), JSON.stringify(entry) + '\n', { mode: 0o644, lines: true })
    await writeFileDurable(join(dir, 'current.json'), JSON.stringify(entry, null, 2) + '\n')
    return entry
  }

  /** Where `name` points now, or `undefined` for a name never published. */
  async current(name: string): Promise<NameEntry | undefined> {
    return parseNameEntry(await readJson(join(this.nameDir(name), 'current.json')))
  }

  /** Every digest `name` pointed at, oldest first (a torn last line is skipped). */
  async history(name: string): Promise<NameEntry[]> {
    let text: string
    try {
      text = await readFile(join(this.nameDir(name), 'history.jsonl'), 'utf8')
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return []
      throw e
    }
    const out: NameEntry[] = []
    for (const line of text.split('\n')) {
      if (!line) continue
      try {
        const e = parseNameEntry(JSON.parse(line))
        if (e) out.push(e)
      } catch {
        // a line torn by a crash mid-append: it was never acknowledged
      }
    }
    return out
  }

  /** Every published image name. */
  async names(): Promise<string[]> {
    try {
      return (await readdir(join(this.dir, 'names'))).filter(isSafeName).sort()
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return []
      throw e
    }
  }

  async objectRecord(sha256: string): Promise<ObjectRecord | undefined> {
    if (!isSha256(sha256)) return undefined
    return parseObjectRecord(await readJson(this.recordPath(sha256)))
  }

  /** The manifest text stored for a digest, or `undefined`. */
  async manifestText(sha256: string): Promise<string | undefined> {
    if (!isSha256(sha256)) return undefined
    try {
      return await readFile(this.manifestPath(sha256), 'utf8')
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined
      throw e
    }
  }

  /**
   * Compares the stored object's file with what was recorded when it was
   * stored (size, mtime, inode): a cheap test for bytes written in place.
   * `undefined` when nothing changed.
   */
  async drift(sha256: string): Promise<ObjectDrift | undefined> {
    const record = await this.objectRecord(sha256)
    if (!record) return undefined
    try {
      const st = await stat(this.objectPath(sha256))
      const found = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino }
      const same = found.size === record.file.size && found.mtimeMs === record.file.mtimeMs && found.ino === record.file.ino
      return same ? undefined : { sha256, expected: record.file, found }
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return { sha256, expected: record.file, found: 'missing' }
      throw e
    }
  }

  private async exists(path: string): Promise<boolean> {
    try {
      await stat(path)
      return true
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return false
      throw e
    }
  }
}

/** sha256 (hex) of a file, read in large pieces. */
export const hashFile = async (path: string, signal?: AbortSignal): Promise<string> => {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20, signal })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** How long a publisher waits for another one moving the same name. */
const NAME_LOCK_WAIT_MS = 30_000
const NAME_LOCK_POLL_MS = 50

/**
 * Runs `fn` holding `<dir>/.lock` (core/lock.ts: a lock left by a dead
 * process is taken over, race-free); a live holder is waited for, up to
 * {@link NAME_LOCK_WAIT_MS}, then ELOCKED.
 */
const withNameLock = async <T>(dir: string, fn: () => Promise<T>): Promise<T> => {
  try {
    return await withLock(join(dir, '.lock'), fn, { timeoutMs: NAME_LOCK_WAIT_MS, pollMs: NAME_LOCK_POLL_MS })
  } catch (e) {
    if (e instanceof LockedError && e.path === join(dir, '.lock')) {
      throw new LockedError(e.path, e.pid, `${dir} is locked by process ${e.pid} (another publish of this name)`)
    }
    throw e
  }
}
