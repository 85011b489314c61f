/**
 * Durable file writes, the one way the agent replaces a small file (cache
 * metadata, spooled events, daemon state, the head's records): a crash at any
 * instant, power loss included, leaves the old content or the new, never a
 * mix and never an empty file.
 *
 * The steps: a temp file opened `wx` in the same directory (same file system,
 * so the rename is atomic; `wx` so two writers never share one) → every byte
 * written → fsync → rename over the target → fsync the directory, because a
 * rename is only durable once the directory holding it is (fsync(2), NOTES).
 * A failed write leaves no temp file behind.
 *
 * Appends to a log (the head's event files and name histories) go through
 * {@link appendDurable}, and every write of bytes through {@link writeAll}:
 * a write(2) may write fewer bytes than asked (a file system filling up
 * part-way), and a caller that does not loop stores a torn record.
 */
import { randomBytes } from 'node:crypto'
import { type FileHandle, open, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { BootAgentError, foreignCode, isErrno, messageOf } from './errors.js'
import { faultPoint, faultsActive } from './fault.js'

/**
 * Adds the path to a file-system error whose message lacks it (a failed
 * write(2) or fsync says only "ENOSPC: no space left on device, write"), in
 * place: its class, code and errno stay, so callers decide as before, and an
 * operator reads which file could not be written.
 */
export const namePath = (e: unknown, path: string): unknown => {
  if (e instanceof Error && !e.message.includes(path)) {
    e.message = `${e.message} (writing ${path})`
    const errno = e as NodeJS.ErrnoException
    if (errno.path === undefined && typeof errno.code === 'string') errno.path = path
  }
  return e
}

/** Mode of files written durably unless told otherwise: the agent's state is root's alone. */
export const DURABLE_FILE_MODE = 0o600

/** fsync a directory (or file) by path, so a rename, link or unlink in it survives a crash. */
export const fsyncPath = async (path: string): Promise<void> => {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

export interface DurableWriteOptions {
  /** Mode of the new file. Default {@link DURABLE_FILE_MODE}. */
  mode?: number
}

/**
 * Replaces `path` atomically and durably with `data` (temp `wx` → write all
 * → fsync → rename → fsync the directory). The temp file is named
 * `.<name>.<pid>.<random>.tmp` beside the target, so a directory scan can
 * tell a crash's leftover from a foreign file.
 */
export const writeFileDurable = async (path: string, data: string | Uint8Array, opts: DurableWriteOptions = {}): Promise<void> => {
  const dir = dirname(path)
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  const fh = await open(tmp, 'wx', opts.mode ?? DURABLE_FILE_MODE).catch((e: unknown) => Promise.reject(namePath(e, path)))
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (e) {
    await fh.close().catch(() => undefined)
    await rm(tmp, { force: true })
    throw namePath(e, path)
  }
  await fh.close()
  faultPoint('durable.write.synced')
  try {
    await rename(tmp, path)
  } catch (e) {
    await rm(tmp, { force: true })
    throw namePath(e, path)
  }
  faultPoint('durable.write.renamed')
  await fsyncPath(dir).catch((e: unknown) => Promise.reject(namePath(e, path)))
}

/**
 * Writes every byte of `data` through `fh`: at `position` and on from there,
 * or, when `position` is omitted, at the handle's own position (a file opened
 * for appending: its end). write(2) may write fewer bytes than asked, e.g.
 * when the file system fills up part-way; this writes the rest, so either all
 * of `data` is written or the error of the write that failed is thrown (the
 * bytes before it may be in the file: the caller cuts them, see
 * {@link appendDurable}). A write that makes no progress is an EIO error,
 * never a silent stop. Returns the bytes written (`data`'s length).
 *
 * (FileHandle.writeFile and fs/promises writeFile/appendFile loop the same
 * way inside Node; FileHandle.write does not.)
 */
export const writeAll = async (fh: FileHandle, data: string | Uint8Array, position?: number): Promise<number> => {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data
  let off = 0
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position === undefined ? null : position + off)
    // Node's errno code, so callers test it as they do ENOSPC.
    if (bytesWritten <= 0) throw new BootAgentError(foreignCode('EIO'), `EIO: write made no progress after ${off} of ${buf.length} bytes`)
    off += bytesWritten
  }
  return off
}

/** Bytes read back at a time while looking for the last newline of a file. */
const TAIL_READ_BYTES = 64 * 1024

/** The length of `fh`'s first `size` bytes up to and including their last newline (0 when there is none). */
const lastLineEnd = async (fh: FileHandle, size: number): Promise<number> => {
  const buf = Buffer.alloc(Math.min(TAIL_READ_BYTES, size))
  for (let end = size; end > 0; ) {
    const from = Math.max(0, end - buf.length)
    const { bytesRead } = await fh.read(buf, 0, end - from, from)
    const at = buf.subarray(0, bytesRead).lastIndexOf(0x0a)
    if (at >= 0) return from + at + 1
    end = from
  }
  return 0
}

export interface AppendOptions {
  /** Mode of the file when the append creates it. Default {@link DURABLE_FILE_MODE}. */
  mode?: number
  /**
   * The file's length after the last append that succeeded, when the caller
   * keeps it: anything beyond it was never acknowledged (an append whose cut
   * failed) and is cut before this append. A file found shorter than `end`
   * (changed behind the caller's back) is taken as it is.
   */
  end?: number
  /** The file holds lines: a last line without its newline (torn by a crash) is cut before appending. */
  lines?: boolean
}

export interface AppendResult {
  /** Where the appended bytes begin. */
  start: number
  /** The file's length after the append. */
  end: number
  /** Bytes cut from the end before appending (see {@link AppendOptions}); 0 normally. */
  cut: number
  created: boolean
}

/**
 * Appends `data` to `path` durably and whole: every byte written
 * ({@link writeAll}), fdatasync, and for a new file its directory fsynced;
 * only then does it resolve. On any failure (ENOSPC, EIO, a short write that
 * cannot complete, a failed sync) the file is cut back to where this append
 * began and synced, so no part of `data` remains and the next append starts
 * on a clean end; the error is thrown with its code kept. When the cut fails
 * too, the error says so (`cause`: the first failure), and a caller passing
 * {@link AppendOptions.end} has the next append cut first. Appends to one
 * file must not run concurrently (the caller serialises them).
 */
export const appendDurable = async (path: string, data: string | Uint8Array, opts: AppendOptions = {}): Promise<AppendResult> => {
  let created = true
  let fh: FileHandle
  // `+`: readable too, the torn-line check reads the file's tail; `x` first, to know whether the directory needs a sync.
  try {
    fh = await open(path, 'ax+', opts.mode ?? DURABLE_FILE_MODE)
  } catch (e) {
    if (!isErrno(e, 'EEXIST')) throw namePath(e, path)
    created = false
    fh = await open(path, 'a+')
  }
  let start = -1
  try {
    const size = (await fh.stat()).size
    let clean = size
    if (opts.end !== undefined && size > opts.end) clean = opts.end
    else if (opts.lines && size > 0 && size !== opts.end) clean = await lastLineEnd(fh, size)
    if (clean < size) {
      await fh.truncate(clean)
      await fh.datasync()
    }
    start = clean
    let written = 0
    if (faultsActive) {
      // A campaign can kill between the halves: a torn line, as a crash mid-write leaves.
      const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data
      written = await writeAll(fh, buf.subarray(0, buf.length >> 1))
      faultPoint('durable.append.torn')
      written += await writeAll(fh, buf.subarray(buf.length >> 1))
    } else written = await writeAll(fh, data)
    faultPoint('durable.append.written')
    await fh.datasync()
    if (created) await fsyncPath(dirname(path))
    faultPoint('durable.append.synced')
    return { start, end: start + written, cut: size - clean, created }
  } catch (e) {
    namePath(e, path)
    if (start < 0) throw e
    // Nothing stored half: cut back to where this append began.
    try {
      await fh.truncate(start)
      await fh.datasync()
    } catch (cutError) {
      // The first failure's errno code is kept (a caller tests ENOSPC the same either way).
      const code = (e as { code?: unknown }).code
      throw new BootAgentError(foreignCode(typeof code === 'string' ? code : 'EIO'), `${messageOf(e)}; and cutting ${path} back to ${start} bytes failed: ${messageOf(cutError)}`, { path, start }, { cause: e })
    }
    throw e
  } finally {
    await fh.close().catch(() => undefined)
  }
}
