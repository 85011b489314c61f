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
 * A large buffer for file reads and O_DIRECT writes, page-aligned.
 *
 * Why: malloc'd buffers (`Buffer.allocUnsafeSlow`, `SharedArrayBuffer`)
 * start at an arbitrary 16-byte boundary — page + 16 for a fresh large
 * allocation, elsewhere for reused memory — and the kernel's copy from the
 * (page-aligned) page cache into page + 16 stalls on 4K aliasing: every
 * load hits the store just written 16 bytes behind it. Measured here:
 * `readSync` of a cached file at 1.6–2.2 GB/s into such a buffer, 10–13 GB/s
 * page-aligned (docs/performance.md, "Read buffers"). A WebAssembly.Memory is
 * mapped by V8 on its own pages, so its buffer is always page-aligned, which
 * O_DIRECT needs as well. `shared` gives a SharedArrayBuffer (for workers).
 */
export const ioBuffer = (bytes: number, opts: { shared?: boolean } = {}): Buffer => {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE_BYTES))
  const mem = new wasmMemory({ initial: pages, maximum: pages, ...(opts.shared ? { shared: true } : {}) })
  return Buffer.from(mem.buffer, 0, bytes)
}

const WASM_PAGE_BYTES = 65536
// @types/node declares no WebAssembly value; the global is there in Node.
const wasmMemory = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared?: boolean }) => { buffer: ArrayBuffer } } }).WebAssembly.Memory
