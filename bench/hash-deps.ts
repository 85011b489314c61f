/**
 * The hashing dependencies against each other, on one thread, on one file
 * (default 1 GiB of random bytes, warm page cache), read in 1 MiB pieces:
 *
 *   xxh64 per 64 MiB segment   our hand-driven xxhash-wasm (hash/segments.ts, 1 thread)
 *                              vs xxhash-wasm's public create64().update()
 *                              vs hash-wasm's createXXHash64().update()
 *   sha256 of the file         node:crypto vs hash-wasm's createSHA256()
 *   read only                  the floor under all of them
 *
 * Medians of --runs (default 5), GB/s, and each time as a ratio of the first
 * of its group: this machine is shared, the ratios in one run are what we keep.
 * hash-wasm is no dependency of ours (docs/performance.md "Hashing
 * dependencies"): its rows are left out when it is not installed.
 *
 * usage: npm run bench -- hash-deps [--size-mib N] [--runs N]
 */
import { createHash } from 'node:crypto'
import { closeSync, openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { gbps, makeRandomFile, median, withTempDir } from './lib.js'
import { ioBuffer } from '../agent/core/io-buffer.js'
import { xxh64Segments } from '../agent/hash/segments.js'
import { xxh } from '../agent/hash/xxh.js'
import { XXH64_SEGMENT_BYTES } from '../agent/hash/xxh64-format.js'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '5' } } })
const size = Number(values['size-mib']) * 1024 * 1024
const runs = Number(values.runs)

interface Hasher {
  init: () => unknown
  update: (b: Uint8Array) => unknown
  digest: (enc: 'hex') => string
}
// Not a static import: the package may be gone (it is not in package.json), and tsc must not need it.
const hashWasmName = 'hash-wasm'
const hashWasm = (await import(hashWasmName).catch(() => undefined)) as { createXXHash64: () => Promise<Hasher>; createSHA256: () => Promise<Hasher> } | undefined

await withTempDir('ba-hash-deps-', async (dir) => {
  const path = join(dir, 'image.raw')
  await makeRandomFile(path, size)
  const buf = ioBuffer(1024 * 1024)
  /** Reads the file in `span`-byte spans, each in 1 MiB pieces: start(), each piece to update(), end() → one digest per span. */
  const readSpans = (span: number, start: () => void, update: (b: Uint8Array) => void, end: () => string): string[] => {
    const fd = openSync(path, 'r')
    const out: string[] = []
    try {
      for (let s = 0; s < size; s += span) {
        start()
        for (let pos = s; pos < Math.min(size, s + span); ) {
          const r = readSync(fd, buf, 0, Math.min(buf.length, s + span - pos, size - pos), pos)
          update(buf.subarray(0, r))
          pos += r
        }
        out.push(end())
      }
    } finally {
      closeSync(fd)
    }
    return out
  }
  const api = await xxh()
  const hwXxh = await hashWasm?.createXXHash64()
  const hwSha = await hashWasm?.createSHA256()
  let h64 = api.create64()
  let sha = createHash('sha256')
  const groups: Record<string, Record<string, () => Promise<string[]>>> = {
    xxh64: {
      'hand-driven xxhash-wasm (hash/segments.ts)': async () => (await xxh64Segments(path, { threads: 1 })).xxh64,
      'xxhash-wasm create64().update()': async () =>
        readSpans(XXH64_SEGMENT_BYTES, () => (h64 = api.create64()), (b) => h64.update(b), () => h64.digest().toString(16).padStart(16, '0')),
      ...(hwXxh ? { 'hash-wasm createXXHash64().update()': async () => readSpans(XXH64_SEGMENT_BYTES, () => hwXxh.init(), (b) => hwXxh.update(b), () => hwXxh.digest('hex')) } : {}),
    },
    sha256: {
      'node:crypto': async () => readSpans(size, () => (sha = createHash('sha256')), (b) => sha.update(b), () => sha.digest('hex')),
      ...(hwSha ? { 'hash-wasm createSHA256()': async () => readSpans(size, () => hwSha.init(), (b) => hwSha.update(b), () => hwSha.digest('hex')) } : {}),
    },
    read: { 'read only': async () => readSpans(size, () => undefined, () => undefined, () => '') },
  }
  const times = new Map<string, number[]>()
  for (let run = 0; run < runs; run++) {
    for (const [group, ways] of Object.entries(groups)) {
      let first: string | undefined
      for (const [name, way] of Object.entries(ways)) {
        const started = process.hrtime.bigint()
        const digests = (await way()).join()
        const seconds = Number(process.hrtime.bigint() - started) / 1e9
        times.set(`${group}\t${name}`, [...(times.get(`${group}\t${name}`) ?? []), seconds])
        if (first === undefined) first = digests
        else if (digests !== first) throw new Error(`${group}: ${name} gives other digests than the first way`)
      }
    }
  }
  const rows = ['| digest | way | GB/s (median of ' + runs + ') | time ÷ first of group |', '|---|---|---:|---:|']
  const firstOf = new Map<string, number>()
  for (const [key, ts] of times) {
    const [group, name] = key.split('\t') as [string, string]
    const m = median(ts)
    if (!firstOf.has(group)) firstOf.set(group, m)
    rows.push(`| ${group} | ${name} | ${gbps(size, m)} | ${(m / firstOf.get(group)!).toFixed(2)} |`)
  }
  process.stdout.write(rows.join('\n') + '\n')
})
