/**
 * xxh64 through xxhash-wasm, driven by hand so that worker threads can run it
 * and hash straight from their wasm memory.
 *
 * xxhash-wasm's public API runs on the thread that imported it only, and
 * copies every input into its memory (create64().update: 1.0–1.3× the time
 * of the hand-driven way here, docs/performance.md "Hashing dependencies").
 * Our workers are source strings started with `eval: true` (no package to
 * import in the bundle's initramfs), so they are given the package's compiled
 * WebAssembly.Module, caught on its way through WebAssembly.instantiate, and
 * drive its exports (init64, update64, digest64 on an 88-byte state) directly.
 * Those are the package's internals: package.json pins its exact version, and
 * test/hash/xxh.test.ts fails loudly when a new one changes them.
 */
import xxhash, { type XXHashAPI } from 'xxhash-wasm'
import { BootAgentError } from '../core/errors.js'

/**
 * Bytes of one xxh64 state. init64 does not clear all of them (xxhash-wasm's
 * create64 zeroes them first): a state is zeroed before every init64.
 */
export const XX_STATE_BYTES = 88

/** The raw exports of xxhash-wasm's module: one 64-bit state ({@link XX_STATE_BYTES}) at `st`, input at `p` in `mem`. */
export interface XxhRaw {
  mem: { buffer: ArrayBuffer; grow: (pages: number) => number }
  init64: (st: number, seed: bigint) => void
  update64: (st: number, p: number, n: number) => void
  digest64: (st: number) => bigint
}

let xxApi: Promise<XXHashAPI> | undefined
let xxModule: Promise<unknown> | undefined

interface WasmNamespace {
  instantiate: (...args: unknown[]) => Promise<{ module: unknown }>
}

/** The xxhash-wasm instance (compiled once per process). */
export const xxh = (): Promise<XXHashAPI> => {
  if (!xxApi) {
    // xxhash-wasm keeps its compiled module to itself: catch it on the way
    // (it instantiates synchronously inside the call) so that a worker thread
    // can run the same code (hash/pool.ts, hash/download-hasher.ts).
    const wasm = (globalThis as unknown as { WebAssembly: WasmNamespace }).WebAssembly
    const instantiate = wasm.instantiate
    wasm.instantiate = (...args: unknown[]) => {
      const p = instantiate.apply(wasm, args)
      xxModule = p.then((r) => r.module)
      return p
    }
    try {
      xxApi = xxhash()
    } finally {
      wasm.instantiate = instantiate
    }
  }
  return xxApi
}

/**
 * xxhash-wasm's compiled WebAssembly.Module (exports mem, init64, update64,
 * digest64: {@link XxhRaw}), to instantiate on any thread.
 */
export const xxhWasmModule = async (): Promise<unknown> => {
  await xxh()
  if (!xxModule) throw new BootAgentError('EINTERNAL', 'internal: the xxhash-wasm module was not captured')
  return xxModule
}
