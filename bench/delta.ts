/**
 * Delta update benchmark (issue 2): with image v1 in the cache, how many bytes
 * and requests does fetching v2 cost, against `casync make` on the same pair?
 *
 * v1 is a reproducible squashfs (`-mkfs-time 0 -all-time 0`) of a real tree
 * (default /usr/share); v2 is the same tree after a modest change: one file
 * appended to, 4 KiB overwritten inside the largest file, one file replaced,
 * a 1 MiB file added, one file deleted. Bytes are counted from nginx's access
 * log (what the server really sent). casync's figure is the compressed size of
 * the chunks v2's store has that v1's store lacks — what a casync client
 * holding v1 would download.
 *
 * usage: npm run bench -- delta [--tree DIR] [--comp zstd|xz|gzip]
 */
import { appendFile, mkdir, open, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { agentEnv, timeCommand, withTempDir } from './lib.js'
import { startNginx } from '../test/helpers/nginx.js'

const { values } = parseArgs({
  options: { tree: { type: 'string', default: '/usr/share' }, comp: { type: 'string', default: 'zstd' } },
  allowPositionals: true,
})

const agent = (args: string[]) =>
  timeCommand(process.execPath, ['dist/boot-agent.mjs', ...args], { env: agentEnv() })

/** Regular files under `dir`, with sizes (no symlinks followed). */
const walk = async (dir: string, out: { path: string; size: number }[] = []): Promise<{ path: string; size: number }[]> => {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) await walk(p, out)
    else if (e.isFile()) out.push({ path: p, size: (await stat(p)).size })
  }
  return out
}

const mksquashfs = (src: string, out: string) =>
  timeCommand('mksquashfs', [src, out, '-comp', values.comp ?? 'zstd', '-mkfs-time', '0', '-all-time', '0', '-all-root', '-no-progress', '-quiet', '-noappend', '-processors', '2'])

/** Total size of casync chunk files (compressed) by chunk id. */
const chunkStore = async (store: string): Promise<Map<string, number>> => {
  const out = new Map<string, number>()
  for (const f of await walk(store)) if (f.path.endsWith('.cacnk')) out.set(f.path.slice(f.path.lastIndexOf('/') + 1), f.size)
  return out
}

await withTempDir('ba-bench-delta-', async (dir) => {
  const tree = join(dir, 'tree')
  const www = join(dir, 'www')
  await mkdir(www)
  process.stderr.write(`copying ${values.tree}…\n`)
  await timeCommand('cp', ['-a', values.tree ?? '/usr/share', tree])
  await mksquashfs(tree, join(www, 'v1.squashfs'))

  // The modest change (as in shared/notes/performance.md).
  const files = (await walk(tree)).filter((f) => f.size > 0).sort((a, b) => b.size - a.size)
  const largest = files[0]
  const mid = files[Math.floor(files.length / 3)]
  const other = files[Math.floor(files.length / 2)]
  const gone = files[Math.floor((2 * files.length) / 3)]
  if (!largest || !mid || !other || !gone) throw new Error(`tree ${values.tree} has too few files`)
  const fh = await open(largest.path, 'r+')
  await fh.write(randomBytes(4096), 0, 4096, Math.floor(largest.size / 2))
  await fh.close()
  await appendFile(mid.path, randomBytes(3000))
  await writeFile(other.path, randomBytes(Math.max(1024, other.size)))
  await writeFile(join(tree, 'boot-agent-bench-new.bin'), randomBytes(1024 * 1024))
  await rm(gone.path)
  await mksquashfs(tree, join(www, 'v2.squashfs'))
  await rm(tree, { recursive: true, force: true })

  const ng = await startNginx(www)
  try {
    for (const v of ['v1', 'v2']) {
      await agent(['manifest', join(www, `${v}.squashfs`), '--name', 'delta-bench', '--url', `${ng.url}/${v}.squashfs`, '--out', join(www, `${v}.manifest.json`)])
    }
    const cache = join(dir, 'cache')
    await agent(['fetch', `${ng.url}/v1.manifest.json`, '--cache', cache])
    await ng.clearAccess()
    await agent(['fetch', `${ng.url}/v2.manifest.json`, '--cache', cache])
    await new Promise((r) => setTimeout(r, 200))
    const v2Reqs = (await ng.access()).filter((r) => r.path === '/v2.squashfs')
    const fetched = v2Reqs.reduce((s, r) => s + r.bytes, 0)
    const v2Size = (await stat(join(www, 'v2.squashfs'))).size

    await timeCommand('casync', ['make', `--store=${join(dir, 'v1.castr')}`, join(dir, 'v1.caibx'), join(www, 'v1.squashfs')])
    await timeCommand('casync', ['make', `--store=${join(dir, 'v2.castr')}`, join(dir, 'v2.caibx'), join(www, 'v2.squashfs')])
    const s1 = await chunkStore(join(dir, 'v1.castr'))
    const s2 = await chunkStore(join(dir, 'v2.castr'))
    let casyncBytes = 0
    let casyncChunks = 0
    for (const [id, size] of s2) if (!s1.has(id)) ((casyncBytes += size), casyncChunks++)

    const pct = (n: number) => ((100 * n) / v2Size).toFixed(2)
    process.stdout.write(
      [
        `delta benchmark: ${values.tree} as ${values.comp} squashfs, v2 = ${v2Size} bytes, ${new Date().toISOString()}`,
        '',
        '| fetcher | bytes fetched for v2 | % of v2 | requests | goal |',
        '|---|---|---|---|---|',
        `| boot-agent (CDC 16K/64K/256K, merged Range) | ${fetched} | **${pct(fetched)} %** | ${v2Reqs.length} | ≤ 1 % and ≤ 2× casync |`,
        `| casync make (compressed chunks v1 lacks) | ${casyncBytes} | ${pct(casyncBytes)} % | ${casyncChunks} chunks | reference |`,
        '',
        `boot-agent / casync = **${(fetched / Math.max(1, casyncBytes)).toFixed(2)}×**`,
        '',
      ].join('\n'),
    )
  } finally {
    await ng.stop()
  }
})
