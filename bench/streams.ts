/**
 * Parallel Range streams for one node's download (issue 20: the default of
 * `rd.bootagent.streams` chosen by measurement): `boot-agent fetch --streams N`
 * (verified, written, fsynced) from nginx on loopback, for each N in turn,
 * round after round, each run cold (no cached object, dirty pages flushed).
 *
 * usage: npm run bench -- streams [--size-mib 512] [--runs 3] [--streams 1,2,4]
 */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { agentEnv, gbps, makeServedImage, median, timeCommand, withTempDir } from './lib.js'
import { startNginx } from '../test/helpers/nginx.js'

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '512' }, runs: { type: 'string', default: '3' }, streams: { type: 'string', default: '1,2,4' } },
  allowPositionals: true,
})
const sizeBytes = Number(values['size-mib']) * 1024 * 1024
const counts = (values.streams as string).split(',').map(Number)
const agent = (args: string[]) => timeCommand(process.execPath, ['dist/boot-agent.mjs', ...args], { rss: true, env: agentEnv() })

await withTempDir('ba-bench-streams-', async (dir) => {
  const { www, image } = await makeServedImage(dir, sizeBytes)
  const ng = await startNginx(www)
  try {
    const manifest = join(www, 'image.manifest.json')
    await agent(['manifest', image, '--name', 'bench', '--url', `${ng.url}/image.squashfs`, '--out', manifest])
    const seconds = new Map<number, number[]>(counts.map((n) => [n, []]))
    const rss = new Map<number, number>()
    for (let r = 0; r < Number(values.runs); r++) {
      for (const n of counts) {
        const cache = join(dir, 'cache')
        await rm(cache, { recursive: true, force: true })
        await timeCommand('sync', [])
        const t = await agent(['fetch', `${ng.url}/image.manifest.json`, '--cache', cache, '--streams', String(n)])
        seconds.get(n)!.push(t.seconds)
        rss.set(n, Math.max(rss.get(n) ?? 0, t.maxRssKiB ?? 0))
      }
    }
    const base = median(seconds.get(counts[0]!)!)
    process.stdout.write(
      [
        `streams benchmark: ${sizeBytes} bytes, median of ${values.runs} rounds, ${new Date().toISOString()}`,
        '',
        '| streams | verified download + fsync | time vs first | peak RSS |',
        '|---|---|---|---|',
        ...counts.map((n) => `| ${n} | ${gbps(sizeBytes, median(seconds.get(n)!))} GB/s (${median(seconds.get(n)!).toFixed(2)} s) | ${(median(seconds.get(n)!) / base).toFixed(2)}× | ${((rss.get(n) ?? 0) / 1024).toFixed(0)} MB |`),
        '',
        `raw seconds: ${JSON.stringify(Object.fromEntries(seconds))}`,
        '',
      ].join('\n'),
    )
  } finally {
    await ng.stop()
  }
})
