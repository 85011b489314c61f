/** Page-aligned buffers for large file reads and O_DIRECT writes (cache, downloader, hashing pool). */

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
