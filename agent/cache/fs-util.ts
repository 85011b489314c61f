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

/**
 * Offset into an over-allocated buffer that makes glibc's large (mmap'd)
 * allocations page-aligned: malloc returns page + 16 for them.
 */
export const PAGE_ALIGN_SKEW = 4096 - 16

/**
 * A large buffer for file reads and writes, page-aligned under glibc.
 *
 * Why: `Buffer.allocUnsafeSlow(4 MiB)` starts 16 bytes past a page boundary,
 * and the kernel's copy from the (page-aligned) page cache into it then
 * stalls on 4K aliasing — every load hits the store just written 16 bytes
 * behind it. Measured here: `readSync` of a cached file at 1.6–2.2 GB/s into
 * such a buffer, 10–13 GB/s into the same memory 256+ bytes further on
 * (docs/performance.md, "Read buffers"). Page alignment also lets the
 * buffer be used for O_DIRECT writes. With another allocator the skew only
 * moves the start somewhere harmless (any offset ≥ 256 into the page).
 */
export const ioBuffer = (bytes: number): Buffer => Buffer.allocUnsafeSlow(bytes + 4096).subarray(PAGE_ALIGN_SKEW, PAGE_ALIGN_SKEW + bytes)
