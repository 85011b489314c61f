/**
 * xxhash-wasm driven by hand (agent/hash/xxh.ts): its compiled module caught
 * on the way, its exports and its 88-byte state written to directly. These
 * are the package's internals, not its API: package.json pins its exact
 * version, and this file is what fails, loudly, when a new version changes
 * them. If it fails after an update, read agent/hash/xxh.ts before anything else.
 */
import t from 'tap'
import { randomFillSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SEGMENT_READ_BYTES, WASM_BUF_OFFSET, xxhThread } from '../../agent/hash/jobs.js'
import { XX_STATE_BYTES, xxh, xxhWasmModule, type XxhRaw } from '../../agent/hash/xxh.js'

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const Wasm = (globalThis as unknown as { WebAssembly: { Module: { new (b: Uint8Array): object; exports: (m: object) => { name: string; kind: string }[] } } }).WebAssembly

t.test('package.json pins xxhash-wasm to the exact version installed', async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }
  const spec = pkg.dependencies['xxhash-wasm']
  t.match(spec, /^\d+\.\d+\.\d+$/, `an exact version, no range (found ${spec}): its internals are used (agent/hash/xxh.ts)`)
  const installed = (JSON.parse(readFileSync(join(dirname(createRequire(import.meta.url).resolve('xxhash-wasm')), '..', 'package.json'), 'utf8')) as { version: string }).version
  t.equal(installed, spec, 'node_modules holds that version')
})

t.test("the module is caught on its way through WebAssembly.instantiate, with the exports we drive", async (t) => {
  const module = await xxhWasmModule()
  t.ok(module instanceof (Wasm.Module as unknown as new () => object), 'a WebAssembly.Module was captured')
  const exports = Object.fromEntries(Wasm.Module.exports(module as object).map((e) => [e.name, e.kind]))
  t.same(
    { mem: exports.mem, init64: exports.init64, update64: exports.update64, digest64: exports.digest64 },
    { mem: 'memory', init64: 'function', update64: 'function', digest64: 'function' },
    `exports found: ${JSON.stringify(exports)}`,
  )
  t.equal(await xxhWasmModule(), module, 'compiled once per process')
})

t.test('the hand-driven state (88 bytes at 0, zeroed, then init64) gives the public h64 on many inputs', async (t) => {
  const { h64Raw, create64 } = await xxh()
  const thread = xxhThread(await xxhWasmModule(), WASM_BUF_OFFSET, SEGMENT_READ_BYTES, XX_STATE_BYTES)
  const xx: XxhRaw = thread.xx
  const data = Buffer.allocUnsafe(3 * 1024 * 1024 + 17)
  randomFillSync(data)
  // Lengths around the 32-byte stripe and 4/8-byte tails, and pieces that split a stripe.
  const lengths = [0, 1, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 100, 1000, 4096, 65537, data.length]
  const pieces = [1, 5, 32, 4096, SEGMENT_READ_BYTES]
  for (const len of lengths) {
    const input = data.subarray(0, len)
    const want = h64Raw(input, 0n)
    t.equal(create64(0n).update(input).digest(), want, `public create64 = h64Raw, ${len} bytes`)
    for (const piece of pieces) {
      if (piece < 32 && len > 70000) continue // byte-sized pieces of megabytes: slow and no more telling
      // Garbage over a whole page first: a state grown past XX_STATE_BYTES, or one init64 no longer
      // fully resets after the zeroing, shows up as a wrong digest here.
      new Uint8Array(xx.mem.buffer, 0, WASM_BUF_OFFSET).fill(0xa5)
      thread.state.fill(0)
      xx.init64(0, 0n)
      for (let p = 0; p < len; p += piece) {
        const n = Math.min(piece, len - p)
        thread.view.set(input.subarray(p, p + n))
        xx.update64(0, WASM_BUF_OFFSET, n)
      }
      t.equal(BigInt.asUintN(64, xx.digest64(0)), want, `${len} bytes in pieces of ${piece}`)
    }
  }
})
