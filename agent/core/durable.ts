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
 */
import { randomBytes } from 'node:crypto'
import { open, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

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
  const fh = await open(tmp, 'wx', opts.mode ?? DURABLE_FILE_MODE)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (e) {
    await fh.close().catch(() => undefined)
    await rm(tmp, { force: true })
    throw e
  }
  await fh.close()
  try {
    await rename(tmp, path)
  } catch (e) {
    await rm(tmp, { force: true })
    throw e
  }
  await fsyncPath(dir)
}
