/**
 * Manifest building benchmarks, on one file (default 2 GiB of random bytes,
 * warm page cache), each against a native tool or a baseline timed in the same run:
 *
 *   build (CLI)      `boot-agent manifest FILE --out M`    vs `openssl dgst -sha256 FILE`
 *                    (a manifest is a whole-file sha256 + CDC + a sha256 per chunk,
 *                    so openssl's single sha256 is the floor to compare with)
 *   build strategies buildManifest() default (cut ‖ whole hash on a worker, then
 *                    chunk hashes on all cores) vs workers: 0 (one pass, one thread)
 *   chunk hashing    hashRanges() of every chunk on all cores    vs `openssl dgst -sha256 FILE`
 *                    (the cache's strong verify; goal ≥ 1.6×)
 *   raw CDC          Chunker over the file's bytes already in memory (GB/s; goal ≥ 1.5)
 *
 * usage: npm run bench -- manifest-build [--size-mib N] [--runs N]
 */
import { open, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { availableParallelism } from 'node:os'
import { agentEnv, compare, gbps, makeRandomFile, median, timeCommand, withTempDir } from './lib.js'
import { buildManifest } from '../agent/manifest/build.js'
import { Chunker } from '../agent/manifest/cdc.js'
import { hashRanges } from '../agent/hash/ranges.js'

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '2048' }, runs: { type: 'string', default: '3' } },
  allowPositionals: true,
})
const sizeBytes = Number(values['size-mib']) * 1024 * 1024
const runs = Number(values.runs)
const agent = (args: string[]) =>
  timeCommand(process.execPath, ['dist/boot-agent.mjs', ...args], { env: agentEnv() })
const openssl = async (file: string): Promise<number> => (await timeCommand('openssl', ['dgst', '-sha256', file])).seconds
const timed = async (fn: () => Promise<unknown>): Promise<number> => {
  const started = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - started) / 1e9
}

await withTempDir('ba-manifest-bench-', async (dir) => {
  const image = join(dir, 'image.raw')
  process.stderr.write(`making ${sizeBytes} bytes of random data…\n`)
  await makeRandomFile(image, sizeBytes)
  const size = (await stat(image)).size
  const out = join(dir, 'image.manifest.json')
  const rows: string[] = []
  const row = (r: string): void => {
    rows.push(r)
    process.stderr.write(r + '\n')
  }

  await openssl(image) // warm the page cache for both sides

  const cli = await compare(runs, async () => (await agent(['manifest', image, '--out', out])).seconds, () => openssl(image))
  row(`| build, CLI (bundle, start-up included) | \`boot-agent manifest\` ${gbps(size, cli.a)} GB/s | \`openssl dgst -sha256\` ${gbps(size, cli.b)} GB/s | **${cli.ratio.toFixed(2)}×** |`)

  const strategies = await compare(
    runs,
    () => timed(() => buildManifest(image, { name: 'bench', urls: ['image.raw'] })),
    () => timed(() => buildManifest(image, { name: 'bench', urls: ['image.raw'], workers: 0 })),
  )
  row(`| build, in-process: cut ‖ whole hash, then chunk hashes on ${availableParallelism()} workers | ${gbps(size, strategies.a)} GB/s | one pass on one thread (cut + both hashes) ${gbps(size, strategies.b)} GB/s | **${strategies.ratio.toFixed(2)}×** |`)

  const m = await buildManifest(image, { name: 'bench', urls: ['image.raw'] })
  const pool = await compare(runs, () => timed(() => hashRanges(image, m.chunks)), () => openssl(image))
  row(`| sha256 of all ${m.chunks.length} chunks (hashRanges, ${availableParallelism()} workers) | ${gbps(size, pool.a)} GB/s | \`openssl dgst -sha256\` ${gbps(size, pool.b)} GB/s | **${pool.ratio.toFixed(2)}×** |`)

  // Raw CDC: the cut alone, over bytes in memory (the first GiB at most), 4 MiB pushes.
  const mem = Buffer.allocUnsafe(Math.min(size, 1024 * 1024 * 1024))
  const fh = await open(image, 'r')
  try {
    for (let o = 0; o < mem.length; ) o += (await fh.read(mem, o, mem.length - o, o)).bytesRead || mem.length
  } finally {
    await fh.close()
  }
  const cdc: number[] = []
  for (let r = 0; r < runs; r++) {
    cdc.push(
      await timed(async () => {
        const c = new Chunker()
        for (let o = 0; o < mem.length; o += 4 * 1024 * 1024) c.push(mem.subarray(o, o + 4 * 1024 * 1024))
        c.end()
      }),
    )
  }
  row(`| raw CDC cut (Chunker, in memory, ${mem.length} bytes) | ${gbps(mem.length, median(cdc))} GB/s | | goal ≥ 1.5 GB/s |`)

  process.stdout.write(
    [
      `manifest-build benchmark: ${size} bytes, ${m.chunks.length} chunks, median of ${runs} alternating runs, ${new Date().toISOString()}`,
      '',
      '| what | boot-agent | baseline | ratio (baseline time / agent time) |',
      '|---|---|---|---|',
      ...rows,
      '',
      `raw seconds: cli ${JSON.stringify(cli.as)} vs ${JSON.stringify(cli.bs)}; strategies ${JSON.stringify(strategies.as)} vs ${JSON.stringify(strategies.bs)}; pool ${JSON.stringify(pool.as)} vs ${JSON.stringify(pool.bs)}; cdc ${JSON.stringify(cdc)}`,
      '',
    ].join('\n'),
  )
})
