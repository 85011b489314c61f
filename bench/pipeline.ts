/**
 * Issue 2's pipeline benchmarks, each a ratio against a native tool timed in
 * the same run on the same file (default 2 GiB of random bytes):
 *
 *   fast re-verify   `boot-agent verify --cache C`           vs `xxhsum -H1 FILE`
 *   strong verify    `boot-agent verify --cache C --strong`  vs `openssl dgst -sha256 FILE`
 *   download         `boot-agent fetch URL --cache C`        vs `curl -o FILE URL && sync`
 *                    (verified + written + fsynced vs unverified)
 *   peak RSS         of that download (GNU time %M)
 *
 * The agent is the bundled CLI (dist/boot-agent.mjs), start-up included, in
 * the environment a node starts it with (bench/lib.ts agentEnv).
 * usage: npm run bench -- pipeline [--size-mib N] [--runs N] [--agent PATH]
 *   --agent PATH: the bundle to measure (default dist/boot-agent.mjs), e.g. a build of an
 *   older commit, to compare its ratios with the current code's run after run.
 */
import { readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { agentEnv, caStartupNote, compare, gbps, makeServedImage, timeCommand, withTempDir } from './lib.js'
import { startNginx } from '../test/helpers/nginx.js'
import { objectPath } from '../agent/cache/layout.js'

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '2048' }, runs: { type: 'string', default: '3' }, agent: { type: 'string', default: 'dist/boot-agent.mjs' } },
  allowPositionals: true,
})
const sizeBytes = Number(values['size-mib']) * 1024 * 1024
const runs = Number(values.runs)
const AGENT = [values.agent as string]

const agent = (args: string[], rss = false) => timeCommand(process.execPath, [...AGENT, ...args], { rss, env: agentEnv() })

await withTempDir('ba-bench-pipeline-', async (dir) => {
  const { www, image } = await makeServedImage(dir, sizeBytes)
  const ng = await startNginx(www)
  try {
    const manifestPath = join(www, 'image.manifest.json')
    await agent(['manifest', image, '--name', 'bench', '--url', `${ng.url}/image.squashfs`, '--out', manifestPath])
    const manifestUrl = `${ng.url}/image.manifest.json`
    const cache = join(dir, 'cache')
    const rows: string[] = []

    // Populate the cache once. The baselines hash the cached object itself (the
    // same file as the agent), read once first so both sides start from the
    // page cache (the download writes its middle with O_DIRECT, past the cache).
    await agent(['fetch', manifestUrl, '--cache', cache])
    const sha = (JSON.parse(await readFile(manifestPath, 'utf8')) as { sha256: string }).sha256
    const object = objectPath(cache, sha)
    await timeCommand('xxhsum', ['-H1', object])

    const fast = await compare(
      runs,
      async () => (await agent(['verify', '--cache', cache])).seconds,
      async () => (await timeCommand('xxhsum', ['-H1', object])).seconds,
    )
    rows.push(`| fast re-verify (xxh64) | \`boot-agent verify\` ${gbps(sizeBytes, fast.a)} GB/s | \`xxhsum -H1\` ${gbps(sizeBytes, fast.b)} GB/s | **${fast.ratio.toFixed(2)}×** | ≥ 1.0× |`)

    const strong = await compare(
      runs,
      async () => (await agent(['verify', '--cache', cache, '--strong'])).seconds,
      async () => (await timeCommand('openssl', ['dgst', '-sha256', object])).seconds,
    )
    rows.push(`| strong verify (sha256) | \`boot-agent verify --strong\` ${gbps(sizeBytes, strong.a)} GB/s | \`openssl dgst -sha256\` ${gbps(sizeBytes, strong.b)} GB/s | **${strong.ratio.toFixed(2)}×** | ≥ 1.6× |`)

    const curlOut = join(dir, 'curl.out')
    let rssKiB = 0
    const dl = await compare(
      runs,
      async () => {
        const t = await agent(['fetch', manifestUrl, '--cache', cache], true)
        rssKiB = Math.max(rssKiB, t.maxRssKiB ?? 0)
        return t.seconds
      },
      async () => {
        const started = process.hrtime.bigint()
        await timeCommand('curl', ['-sS', '-o', curlOut, `${ng.url}/image.squashfs`])
        await timeCommand('sync', [])
        return Number(process.hrtime.bigint() - started) / 1e9
      },
      async () => {
        // Each run starts cold: no cached object, no curl output, dirty pages flushed.
        await rm(cache, { recursive: true, force: true })
        await rm(curlOut, { force: true })
        await timeCommand('sync', [])
      },
    )
    rows.push(`| verified download + fsync | \`boot-agent fetch\` ${gbps(sizeBytes, dl.a)} GB/s | \`curl -o && sync\` ${gbps(sizeBytes, dl.b)} GB/s | **${dl.ratio.toFixed(2)}×** | ≥ 1.0× (goal 1.5×) |`)
    rows.push(`| peak RSS during the download | ${(rssKiB / 1024).toFixed(0)} MB | | | ≤ 150 MB |`)
    const size = (await stat(image)).size
    const caNote = await caStartupNote()
    process.stdout.write(
      [
        `pipeline benchmark: ${size} bytes, median of ${runs} alternating runs, ${new Date().toISOString()}, agent ${AGENT[0]}`,
        '',
        '| what | boot-agent | baseline | ratio (baseline time / agent time) | goal |',
        '|---|---|---|---|---|',
        ...rows,
        '',
        `raw seconds: fast ${JSON.stringify(fast.as)} vs ${JSON.stringify(fast.bs)}; strong ${JSON.stringify(strong.as)} vs ${JSON.stringify(strong.bs)}; download ${JSON.stringify(dl.as)} vs ${JSON.stringify(dl.bs)}`,
        '',
        ...(caNote ? [caNote, ''] : []),
      ].join('\n'),
    )
  } finally {
    await ng.stop()
  }
})
