/**
 * Writes a download's verified bytes into its partial file: the large,
 * page-aligned middle of a run with O_DIRECT, the rest through the page
 * cache; every write complete (short writes continued), and a full file
 * system (ENOSPC/EDQUOT) answered by whoever owns the space (the cache's
 * `reserve`), never decided here. A failure of this machine's disk is a
 * LocalIoError: never retried on another mirror.
 */
import { constants as fsConstants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { BootAgentError, isErrno } from '../core/errors.js'
import type { Logger } from '../core/log.js'

/** Alignment of O_DIRECT writes: a page covers every logical block size in use. */
export const DIRECT_ALIGN = 4096
/** Runs shorter than this are written through the page cache (not worth an O_DIRECT split). */
export const DIRECT_MIN_BYTES = 256 * 1024

/** A failure of this machine's disk, not of the server: never retried on another mirror. */
export class LocalIoError extends BootAgentError {
  constructor(what: string, cause: unknown) {
    super('ELOCALIO', `${what}: ${(cause as Error)?.message ?? String(cause)}`, { errno: (cause as { code?: unknown })?.code }, { cause })
  }
}

/** Runs `fn`, turning an untyped failure (the disk's) into a LocalIoError saying what was being done. */
export const local = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
  try {
    return await fn()
  } catch (e) {
    if (e instanceof BootAgentError) throw e // CacheFullError, SizeError, aborts: already typed
    if (e instanceof Error && e.name === 'AbortError') throw e
    throw new LocalIoError(what, e)
  }
}

export interface DiskWriterOptions {
  /** The partial file, opened for writing (its own handle: buffered writes). */
  fh: FileHandle
  /** Its path (for the O_DIRECT handle and messages). */
  path: string
  log: Logger
  /**
   * The file system refused a write (ENOSPC/EDQUOT) the `attempt`-th time in
   * a row, `bytesLeft` of it unwritten: resolves once room may have been
   * made (the write is tried again), or throws (CacheFullError).
   */
  noSpace: (bytesLeft: number, attempt: number) => Promise<void>
}

/** The partial file's writer: {@link write} (O_DIRECT where it pays) and {@link writeBuffered}. */
export class DiskWriter {
  /**
   * A second handle on the partial file opened with O_DIRECT; null when the
   * file system refuses it. The promise is kept, not the handle: writes from
   * several buffers run at once, and each must not open a handle of its own
   * (one would be left open, keeping the cache's file system busy).
   */
  private direct: Promise<FileHandle | null> | undefined
  private refusedDirect: FileHandle | undefined

  constructor(private readonly o: DiskWriterOptions) {}

  private directHandle(): Promise<FileHandle | null> {
    return (this.direct ??= open(this.o.path, fsConstants.O_WRONLY | fsConstants.O_DIRECT).catch((e: unknown) => {
      this.o.log.debug({ err: e, path: this.o.path }, 'O_DIRECT not available here: buffered writes')
      return null
    }))
  }

  /**
   * Writes verified bytes at `pos`: the page-aligned middle of a large run
   * with O_DIRECT (large aligned direct writes measured ~2× buffered ones
   * + fsync here, and leave no dirty pages for the final fsync), the
   * unaligned ends through the page cache. `buf`'s address is congruent
   * to `pos` modulo a page (ChunkWriter), so the middle is aligned in
   * memory too.
   */
  async write(buf: Uint8Array, pos: number): Promise<void> {
    const end = pos + buf.length
    const a = Math.ceil(pos / DIRECT_ALIGN) * DIRECT_ALIGN
    const e = Math.floor(end / DIRECT_ALIGN) * DIRECT_ALIGN
    const dfh = e - a >= DIRECT_MIN_BYTES ? await this.directHandle() : null
    if (!dfh) return this.writeBuffered(buf, pos)
    if (a > pos) await this.writeBuffered(buf.subarray(0, a - pos), pos)
    try {
      await this.writeBuffered(buf.subarray(a - pos, e - pos), a, dfh)
    } catch (err) {
      if (!isErrno(err, 'EINVAL')) throw err
      this.o.log.debug({ err, path: this.o.path }, 'O_DIRECT write refused: buffered writes from now on')
      this.direct = Promise.resolve(null)
      this.refusedDirect = dfh // closed at the end: another write may still be going through it
      await this.writeBuffered(buf.subarray(a - pos, e - pos), a)
    }
    if (end > e) await this.writeBuffered(buf.subarray(e - pos), e)
  }

  /** Writes `buf` at `pos` fully (through `fh`, default the partial's own handle); a full file system goes to `noSpace`, then the write goes on. */
  async writeBuffered(buf: Uint8Array, pos: number, fh: FileHandle = this.o.fh): Promise<void> {
    let off = 0
    for (let refusals = 0; off < buf.length; ) {
      try {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off)
        off += bytesWritten
      } catch (e) {
        if (!isErrno(e, 'ENOSPC', 'EDQUOT')) throw e
        await this.o.noSpace(buf.length - off, ++refusals)
      }
    }
  }

  /** Closes the O_DIRECT handle(s); the partial's own handle is its owner's. */
  async close(): Promise<void> {
    await (await this.direct)?.close().catch(() => undefined)
    await this.refusedDirect?.close().catch(() => undefined)
  }
}
