/**
 * Boot stage benchmark (docs/performance.md, "Boot stage").
 *
 * 1. A cache-hit disked boot of a 1 GiB squashfs image by the bundled agent
 *    (`node dist/boot-agent.mjs boot`, a fresh process each time, real loop
 *    devices with labelled ext4 cache and root partitions, a real nginx
 *    serving the head-node files), against doing the same work by hand in
 *    the same run: wipe the root, `xxhsum -H1` the cached object,
 *    `unsquashfs` it into the root. Goal: agent ≤ 1.1× the hand-run tools.
 * 2. Bundled agent start-up to its first action (`timings.startup` in the
 *    boot record: ms from process start to the boot command's first line),
 *    next to a bare `node -e ''`. Goal ≤ 150 ms.
 *
 * usage: npm run bench -- boot-hit [--size-mib N] [--runs N]
 * Needs root, loop devices, squashfs-tools, xxhash, nginx. Files live in
 * /var/tmp/ba-boot-bench-* and are removed at the end.
 */
import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, rm, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { compare, makeRandomFile, median, timeCommand, withTempDir } from './lib.js'
import { makeLoopDisk, unmountUnder, uniqueLabel, type LoopDisk } from '../test/helpers/loop.js'
import { startNginx } from '../test/helpers/nginx.js'
import { publishStatic } from '../test/helpers/static-head.js'

const exec = promisify(execFile)
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}
const SIZE_MIB = arg('size-mib', 1024)
const RUNS = arg('runs', 3)
const STARTUP_RUNS = 7
const AGENT = join(process.cwd(), 'dist', 'boot-agent.mjs')

const main = async (): Promise<void> => {
  await withTempDir('ba-boot-bench-', async (dir) => {
    const disks: LoopDisk[] = []
    let stopNginx: (() => Promise<void>) | undefined
    try {
      // The image: mostly incompressible files (like binaries) plus some text, zstd, 1 GiB.
      const tree = join(dir, 'tree')
      await mkdir(join(tree, 'sbin'), { recursive: true })
      await mkdir(join(tree, 'usr', 'lib', 'big'), { recursive: true })
      await writeFile(join(tree, 'sbin', 'init'), '#!/bin/sh\nexec /bin/sh\n')
      await chmod(join(tree, 'sbin', 'init'), 0o755)
      const files = Math.max(1, Math.round(SIZE_MIB / 64))
      for (let i = 0; i < files; i++) await makeRandomFile(join(tree, 'usr', 'lib', 'big', `blob-${i}.bin`), Math.round((SIZE_MIB * 1024 * 1024) / files))
      const image = join(dir, 'image.sqfs')
      await exec('mksquashfs', [tree, image, '-noappend', '-quiet', '-no-progress', '-comp', 'zstd'], { maxBuffer: 1 << 24 })
      await rm(tree, { recursive: true, force: true })
      const imageBytes = (await exec('stat', ['-c', '%s', image])).stdout.trim()

      const cacheLabel = uniqueLabel('bbc')
      const rootLabel = uniqueLabel('bbr')
      const diskMiB = Math.ceil(SIZE_MIB * 1.3) + 128
      disks.push(await makeLoopDisk({ dir: join(dir, 'disks'), sizeMiB: diskMiB, label: cacheLabel }))
      disks.push(await makeLoopDisk({ dir: join(dir, 'disks'), sizeMiB: diskMiB, label: rootLabel }))
      const rootDev = disks[1]?.device ?? ''

      const www = join(dir, 'www')
      const nginx = await startNginx(www)
      stopNginx = nginx.stop
      const pub = await publishStatic({ root: www, server: nginx.url, node: 'bench', image, name: 'bench-os', style: 'disked', partitions: { cache: `LABEL=${cacheLabel}`, root: `LABEL=${rootLabel}` } })
      await rm(image)
      const cmdline = join(dir, 'cmdline')
      await writeFile(cmdline, `rd.bootagent.server=${nginx.url} rd.bootagent.node=bench rd.bootagent.devtimeout=5\n`)
      const runDir = join(dir, 'run')
      const sysroot = join(dir, 'sysroot')
      const reboot = async (): Promise<void> => {
        await unmountUnder(sysroot)
        await unmountUnder(runDir)
        await rm(runDir, { recursive: true, force: true })
      }
      const agentBoot = async (): Promise<{ seconds: number; record: Record<string, unknown> }> => {
        await reboot()
        const t = await timeCommand('node', [AGENT, 'boot', '--cmdline-file', cmdline, '--run-dir', runDir, '--sysroot', sysroot, '--json'], {
          env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn' },
        })
        const record = JSON.parse(t.stdout) as Record<string, unknown>
        if (record.result !== 'ok') throw new Error(`agent boot failed: ${t.stdout}`)
        return { seconds: t.seconds, record }
      }

      // Cold boot: fills the cache (not measured).
      const cold = await agentBoot()
      const cache = cold.record.cache as { objectPath: string; hit: boolean }
      const object = cache.objectPath
      process.stderr.write(`cold boot done (hit=${cache.hit}); object ${object}\n`)

      // By hand, the same work on the same object: wipe the root, xxh64 the object, unsquashfs into the root.
      const handDir = join(dir, 'hand-root')
      await mkdir(handDir, { recursive: true })
      const byHand = async (): Promise<number> => {
        await reboot()
        // Keep the cache mounted for reading the object: mount it (outside the timing).
        await mkdir(join(runDir, 'cache'), { recursive: true })
        await exec('mount', [disks[0]?.device ?? '', join(runDir, 'cache')])
        await exec('mount', [rootDev, handDir])
        const started = process.hrtime.bigint()
        for (const e of await readdir(handDir)) if (e !== 'lost+found') await rm(join(handDir, e), { recursive: true, force: true })
        await timeCommand('xxhsum', ['-H1', object])
        await timeCommand('unsquashfs', ['-f', '-no-progress', '-q', '-d', handDir, object])
        const s = Number(process.hrtime.bigint() - started) / 1e9
        await exec('umount', [handDir])
        return s
      }
      const hits: Array<Record<string, unknown>> = []
      const r = await compare(
        RUNS,
        async () => {
          const b = await agentBoot()
          if ((b.record.cache as { hit: boolean }).hit !== true) throw new Error('expected a cache hit')
          hits.push(b.record)
          return b.seconds
        },
        byHand,
      )

      // Start-up to first action.
      const startups: number[] = []
      const bare: number[] = []
      for (let i = 0; i < STARTUP_RUNS; i++) {
        await reboot()
        const t = await timeCommand('node', [AGENT, 'boot', '--cmdline-file', cmdline, '--run-dir', runDir, '--sysroot', sysroot, '--json'], { env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn' } })
        startups.push(Number((JSON.parse(t.stdout) as { timings: { startup: number } }).timings.startup))
        bare.push((await timeCommand('node', ['-e', ''])).seconds * 1000)
      }
      await reboot()

      const timingKeys = ['startup', 'descriptor', 'partitions', 'manifest', 'fetch', 'measure', 'root', 'total']
      const steps = timingKeys.map((k) => `${k} ${median(hits.map((h) => Number((h.timings as Record<string, number>)[k])))} ms`).join(', ')
      const load = (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')
      const out = [
        `Cache-hit disked boot, ${SIZE_MIB} MiB of files (zstd squashfs ${imageBytes} bytes, sha256 ${pub.sha256.slice(0, 12)}…), medians of ${RUNS} alternating runs, load average ${load}:`,
        '',
        '| what | seconds |',
        '|---|---|',
        `| \`boot-agent boot\` (bundled, fresh process: descriptor, mount, fast re-verify, measure, wipe, unpack, bind) | ${r.a.toFixed(2)} |`,
        `| by hand: \`rm -rf\` root, \`xxhsum -H1\` object, \`unsquashfs -f -d root\` | ${r.b.toFixed(2)} |`,
        `| **ratio agent / by hand** (goal ≤ 1.1) | **${(r.a / r.b).toFixed(3)}** |`,
        '',
        `agent steps (median): ${steps}`,
        `runs: agent ${r.as.map((x) => x.toFixed(2)).join(' ')} s; by hand ${r.bs.map((x) => x.toFixed(2)).join(' ')} s`,
        '',
        `Start-up to first action (\`timings.startup\`, ${STARTUP_RUNS} runs): median **${median(startups)} ms** (goal ≤ 150 ms; runs ${startups.join(' ')}); bare \`node -e ''\` wall time median ${median(bare).toFixed(0)} ms.`,
      ]
      process.stdout.write(out.join('\n') + '\n')
    } finally {
      await unmountUnder(dir)
      for (const d of disks) await d.detach()
      await stopNginx?.()
    }
  })
}

await main()
