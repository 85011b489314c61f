/** Small durable-filesystem helpers shared by the cache and the downloader. */
import { open, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { FILE_MODE } from './layout.js'

/** fsync a directory (or file) by path, so a rename or unlink in it survives a crash. */
export const fsyncPath = async (path: string): Promise<void> => {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/**
 * Replaces `path` atomically with `data`: temp file `wx` in the same
 * directory → fsync → rename → fsync the directory. A crash leaves the old or
 * the new content, never a mix.
 */
export const writeFileAtomic = async (path: string, data: string | Uint8Array): Promise<void> => {
  const dir = dirname(path)
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`)
  const fh = await open(tmp, 'wx', FILE_MODE)
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
