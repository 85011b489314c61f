/**
 * The cache's names for the shared floor's durable write and page-aligned
 * buffers (agent/core/). Kept only for the cache's own modules that still
 * import it (store.ts, partial.ts, hash-file.ts); new code, and anything
 * outside cache/, imports agent/core/ directly.
 */
export { fsyncPath, writeFileDurable as writeFileAtomic } from '../core/durable.js'
export { ioBuffer } from '../core/io-buffer.js'
