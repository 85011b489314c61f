/**
 * The hashing each thread does, the same on a pool worker (hash/pool.ts puts
 * these functions' source into the worker's) and on a calling thread that
 * hashes too. So each function uses only its arguments: no imports, no
 * closures, no module constants.
 */
import type { XxhRaw } from './xxh.js'

/** What a thread needs to hash one job: the job, and its own page-aligned read buffer. */
export interface HashJobInput {
  path: string
  offsets: Float64Array
  sizes: Float64Array
  spanEnd: number
  bufferSize: number
}

/**
 * Hashes one job (ranges of one file, sorted, within [offsets[0], spanEnd))
 * with synchronous reads into `buf`: 32 bytes of sha256 per range. The same
 * function runs on the pool's workers (hash/pool.ts) and, with
 * `callerHashes`, on the calling thread (hash/ranges.ts). A range that fits the buffer is
 * hashed in one piece (one-shot crypto.hash where Node has it, >= 20.12: no
 * Hash object per range, ~0.1 CPU-s per 2 GiB of 64 KiB chunks here); a read
 * starts at such a range when the buffer holds only its head.
 */
export function hashJob(
  job: HashJobInput,
  buf: Buffer,
  fs: { openSync: (p: string, f: string) => number; readSync: (fd: number, b: Uint8Array, off: number, len: number, pos: number) => number; closeSync: (fd: number) => void },
  crypto: { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Uint8Array; createHash: (alg: string) => { update: (d: Uint8Array) => unknown; digest: () => Uint8Array } },
): Uint8Array {
  const oneShot = typeof crypto.hash === 'function'
    ? (bytes: Uint8Array): Uint8Array => crypto.hash!('sha256', bytes, 'buffer')
    : (bytes: Uint8Array): Uint8Array => {
        const h = crypto.createHash('sha256')
        h.update(bytes)
        return h.digest()
      }
  const fd = fs.openSync(job.path, 'r')
  try {
    const n = job.offsets.length
    const out = new Uint8Array(32 * n)
    let bufStart = 0
    let bufEnd = 0
    // Fills buf from file offset o with up to bufferSize bytes, not past the job's span.
    const fill = (o: number): void => {
      const want = Math.min(job.bufferSize, job.spanEnd - o)
      let got = 0
      while (got < want) {
        const r = fs.readSync(fd, buf, got, want - got, o + got)
        if (r === 0) {
          const e = new Error(`${job.path} ends at ${o + got}, before byte ${o + want} of a range`) as Error & { code?: string }
          e.code = 'EBADSIZE'
          throw e
        }
        got += r
      }
      bufStart = o
      bufEnd = o + got
    }
    for (let k = 0; k < n; k++) {
      let o = job.offsets[k]!
      let rem = job.sizes[k]!
      if (rem <= job.bufferSize) {
        if (rem > 0 && (o < bufStart || o + rem > bufEnd)) fill(o)
        out.set(oneShot(rem > 0 ? buf.subarray(o - bufStart, o - bufStart + rem) : buf.subarray(0, 0)), 32 * k)
        continue
      }
      const h = crypto.createHash('sha256')
      while (rem > 0) {
        if (o < bufStart || o >= bufEnd) fill(o)
        const take = Math.min(rem, bufEnd - o)
        h.update(buf.subarray(o - bufStart, o - bufStart + take))
        o += take
        rem -= take
      }
      out.set(h.digest(), 32 * k)
    }
    return out
  } finally {
    fs.closeSync(fd)
  }
}

/** A thread's own xxhash-wasm instance: its one state at 0 and its read buffer, both in its wasm memory. */
export interface XxhThread {
  xx: XxhRaw
  /** The read buffer, at `bufOffset` in xx.mem. */
  view: Uint8Array
  bufOffset: number
  /** The state, at 0 in xx.mem. */
  state: Uint8Array
}

/**
 * Bytes per read while hashing segments. Two threads hashing 2 GiB from the
 * page cache here, fastest of 7 runs in each of three rounds: 1 MiB reads
 * 276, 244, 396 ms; 4 MiB 255, 251, 509 ms; 512 KiB and 2 MiB like 1 MiB; the
 * medians favoured 0.5–2 MiB by 5–10 % (a buffer that stays in the core's
 * cache for the hash that follows). Within this machine's noise at times.
 */
export const SEGMENT_READ_BYTES = 1024 * 1024
/** Where each thread's read buffer starts in its wasm memory: page-aligned (4K aliasing, see core/io-buffer.ts), past the state at 0. */
export const WASM_BUF_OFFSET = 4096

/**
 * Instantiates xxhash-wasm's compiled module (hash/xxh xxhWasmModule) on this
 * thread, its memory grown to hold a `readBytes` buffer at `bufOffset`.
 */
export function xxhThread(module: unknown, bufOffset: number, readBytes: number, stateBytes: number): XxhThread {
  const Wasm = (globalThis as unknown as { WebAssembly: { Instance: new (m: unknown, imports: object) => { exports: unknown } } }).WebAssembly
  const xx = new Wasm.Instance(module, {}).exports as XxhRaw
  const need = bufOffset + readBytes
  if (xx.mem.buffer.byteLength < need) xx.mem.grow(Math.ceil((need - xx.mem.buffer.byteLength) / 65536))
  return { xx, bufOffset, view: new Uint8Array(xx.mem.buffer, bufOffset, readBytes), state: new Uint8Array(xx.mem.buffer, 0, stateBytes) }
}

/**
 * xxh64 (seed 0, hex) of segment `i` of the file open at `fd`, read with
 * synchronous reads straight into the thread's wasm memory (no copy from a
 * JS buffer: xxhash-wasm's update() copies every byte once), and the bytes
 * read: fewer than the segment's only if the file is shorter than `size`
 * (the caller compares sizes).
 */
export function xxh64Segment(
  t: XxhThread,
  fd: number,
  size: number,
  i: number,
  segmentBytes: number,
  readSync: (fd: number, b: Uint8Array, off: number, len: number, pos: number) => number,
): { hex: string; bytes: number } {
  const { xx, view, state, bufOffset } = t
  state.fill(0)
  xx.init64(0, 0n)
  let pos = i * segmentBytes
  let got = 0
  const end = Math.min(size, pos + segmentBytes)
  while (pos < end) {
    const r = readSync(fd, view, 0, Math.min(view.length, end - pos), pos)
    if (r === 0) break
    xx.update64(0, bufOffset, r)
    pos += r
    got += r
  }
  return { hex: BigInt.asUintN(64, xx.digest64(0)).toString(16).padStart(16, '0'), bytes: got }
}
