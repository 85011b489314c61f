/**
 * Issue #19's root-step goal with fs-verity, in one VM run (docs/performance.md,
 * "fs-verity: measured hits"). This machine's kernel has no fs-verity; the VM's
 * Debian 6.1 kernel has it, so the ratio with a measured hit is timed here, under
 * QEMU TCG (no KVM: every time is emulation's, many times a real node's; the ratio
 * compares two steps of the same emulated machine).
 *
 * The image: the Debian 12 VM image (test/vm/debian.ts, systemd root with our
 * .deb and the test probe) plus a real payload, a copy of host directories
 * (`--payload`, default /usr/share) under /usr/local/share/ba-bench-payload, so
 * the same guest still boots from it; re-squashed with zstd as the VM image is.
 * One disk (a cache partition the agent formats with verity, a root partition),
 * the reference head on loopback, and in sequence:
 *   1. cold overlay boot: download, full verification, sealing (not timed);
 *   2. per round: an `unpack`-mode hit, whose own `root.unsquashfs` timing is
 *      the baseline (the stage runs the initramfs's unsquashfs on the cached
 *      object into the root partition: same tool, same image, same disk; the
 *      guest has no shell for a by-hand run, rd.shell=0 and only the probe);
 *      then an `overlay`-mode hit, whose root step is the hit's verification
 *      (open cache + manifest + fetch, as bench/boot-hit.ts rootModes() counts
 *      it: here the kernel's fs-verity measurement) plus the mounts (`root`).
 * Each boot is a fresh guest, so its page cache starts empty (the host's page
 * cache holds the disk image: QEMU cache=unsafe). Timings come from the boot
 * event the daemon delivered to the head (the stage's boot record).
 *
 * usage: npm run bench -- vm-root [--payload DIR,DIR…] [--rounds N]
 * Needs root, qemu, squashfs-tools (bench/run.sh installs the VM packages) and the
 * agent's .deb: BOOT_AGENT_VM_DEB, which bench/run.sh sets to this tree's package
 * (scripts/package-deb.sh) unless given. The image and initramfs are cached as the
 * VM tests cache them; one run of a 1.1 GB tree takes ~16 min on this host. Files
 * live in /var/tmp/ba-vm-root-* (BENCH_TMPDIR) and are removed at the end.
 */
import { execFile } from 'node:child_process'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { median, withTempDir } from './lib.js'
import { bootVm, BOOT_TIMEOUT_S, buildInitramfs, findKernel, makeDisk, REPO, type Disk } from '../test/vm/harness.js'
import { buildOsImage, findPackage, makeReportDisk, messageOf, readReport, VM_TEST_MODULE } from '../test/vm/debian.js'
import { publishVmImage, startVmHead, storedEvents } from '../test/vm/head-store.js'

const exec = promisify(execFile)
const argText = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const PAYLOAD_DIRS = (argText('payload') ?? '/usr/share').split(',')
const ROUNDS = Number(argText('rounds') ?? 1)
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 5) throw new Error(`--rounds: 1 to 5 (each round is two TCG boots of minutes), got ${argText('rounds')}`)
const NODE = 'vm-root'
const MIB = 2 ** 20
/** The cold boot downloads and seals the whole image under TCG: minutes per 100 MB. */
const COLD_TIMEOUT_S = 3 * BOOT_TIMEOUT_S

/** What a boot's record says, as the head stored it (the stage's boot event, delivered by the daemon). */
interface BootFigures {
  mode: string
  hit: boolean
  verification: string
  bytesReadVerifying: number
  timings: Record<string, number>
  wallMs: number
}

interface RecordData {
  root?: { mode?: string }
  cache?: { hit?: boolean; verification?: string; bytesReadVerifying?: number }
  timings?: Record<string, number>
}

/** The debian image's tree plus the payload, squashed as scripts/build-vm-image.sh squashes the VM image. */
const buildBigImage = async (debianImage: string, dir: string): Promise<{ path: string; bytes: number; unpackedBytes: number; files: number }> => {
  const tree = join(dir, 'tree')
  await exec('unsquashfs', ['-no-progress', '-q', '-d', tree, debianImage])
  const into = join(tree, 'usr', 'local', 'share', 'ba-bench-payload')
  await mkdir(into, { recursive: true })
  await exec('cp', ['-a', ...PAYLOAD_DIRS, into])
  const unpackedBytes = Number((await exec('du', ['-sb', tree])).stdout.split(/\s+/)[0])
  const files = Number((await exec('sh', ['-c', 'find "$0" -xdev -type f | wc -l', tree])).stdout.trim())
  const path = join(dir, 'big.squashfs')
  await exec('mksquashfs', [tree, path, '-comp', 'zstd', '-noappend', '-no-progress', '-quiet', '-no-xattrs'], { maxBuffer: 1 << 24 })
  await exec('rm', ['-rf', tree])
  return { path, bytes: Number((await exec('stat', ['-c', '%s', path])).stdout.trim()), unpackedBytes, files }
}

const loadAverage = async (): Promise<string> => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')

await withTempDir('ba-vm-root-', async (dir) => {
  if (process.getuid?.() !== 0) throw new Error('vm-root needs root (unsquashfs of the Debian tree keeps its owners)')
  const [kernel, deb] = [await findKernel(), await findPackage()]
  const [os, initrd] = await Promise.all([
    buildOsImage(deb),
    buildInitramfs({ kver: kernel.kver, bundle: join(REPO, 'dist', 'boot-agent.mjs'), deb, flavour: 'systemd', testModule: VM_TEST_MODULE }),
  ])
  process.stderr.write(`Debian image ${os.path} (${os.bytes} bytes); adding ${PAYLOAD_DIRS.join(' ')} and squashing…\n`)
  const image = await buildBigImage(os.path, dir)
  const store = join(dir, 'store')
  await mkdir(store, { recursive: true })
  const pub = await publishVmImage(image.path, 'debian-big', store)
  const manifest = JSON.parse(await readFile(pub.manifestPath, 'utf8')) as { fsverityDigest?: string }
  if (!manifest.fsverityDigest) throw new Error('the published manifest carries no fsverityDigest: the hit could not be measured')
  const partitions = { cache: 'PARTLABEL=cwcache', root: 'LABEL=cwroot' }
  const policies = { cacheFull: 'ram', verify: 'fast', onfail: 'emergency', rootMode: 'overlay' }
  const head = await startVmHead(dir, store, { image: 'debian-big', style: 'disked', partitions, policies }, [NODE])
  try {
    // The cache holds the object and its Merkle tree (1/128 of it); the root the unpacked tree beside an overlay upper.
    const disk: Disk = await makeDisk(join(dir, 'disk.img'), [
      { label: 'cwcache', mib: Math.ceil((image.bytes / MIB) * 1.2) + 128, format: false },
      { label: 'cwroot', mib: Math.ceil((image.unpackedBytes / MIB) * 1.3) + 512 },
    ])
    let n = 0
    const boot = async (mode: 'overlay' | 'unpack', timeoutS: number): Promise<BootFigures> => {
      n++
      const reportDisk = await makeReportDisk(join(dir, `report-${n}.img`))
      const before = (await storedEvents(store, NODE)).length
      const r = await bootVm({
        kernel, initrd: initrd.path, disk, extraDisks: [reportDisk], memMiB: 2048, timeoutS,
        consoleFile: join(dir, `console-${n}.log`),
        cmdline: ['root=bootagent', `rd.bootagent.server=http://10.0.2.2:${head.port}`, `rd.bootagent.node=${NODE}`, 'rd.bootagent.devtimeout=20', 'rd.shell=0 rd.emergency=poweroff', 'ba.vmtest.report', 'rd.bootagent.format=cache', `rd.bootagent.rootmode=${mode}`].join(' '),
      })
      const report = await readReport(reportDisk.path)
      const boots = (await storedEvents(store, NODE)).slice(before).filter((e) => e.kind === 'boot')
      const data = (boots.at(-1)?.data ?? {}) as { record?: RecordData } & RecordData
      const rec = data.record ?? data
      if (!rec.timings || rec.root?.mode !== mode) throw new Error(`boot ${n} (${mode}): no ${mode} boot record reached the head (qemu exit ${r.exitCode} after ${r.ms} ms, report ${report ? report.state['boot-agent.service'] : 'missing'}; console tail: ${r.console.slice(-2000)})`)
      // The record's words, else the stage's journal line (the same facts).
      const line = report?.journal.map(messageOf).map((m) => /image verified: (.+?), (\d+) bytes read from the cache device/.exec(m)).find((m) => m)
      const figures = {
        mode, hit: rec.cache?.hit === true, timings: rec.timings, wallMs: r.ms,
        verification: rec.cache?.verification ?? line?.[1] ?? '?',
        bytesReadVerifying: rec.cache?.bytesReadVerifying ?? Number(line?.[2] ?? NaN),
      }
      process.stderr.write(`boot ${n} (${mode}): ${figures.hit ? 'hit' : 'miss'}, ${figures.verification}, ${figures.bytesReadVerifying} bytes read verifying, qemu ${r.ms} ms; timings ${JSON.stringify(figures.timings)}\n`)
      return figures
    }
    const loadBefore = await loadAverage()
    const cold = await boot('overlay', COLD_TIMEOUT_S)
    const unpacks: BootFigures[] = []
    const overlays: BootFigures[] = []
    for (let i = 0; i < ROUNDS; i++) {
      unpacks.push(await boot('unpack', 2 * BOOT_TIMEOUT_S))
      overlays.push(await boot('overlay', 2 * BOOT_TIMEOUT_S))
    }
    const loadAfter = await loadAverage()
    for (const b of [...unpacks, ...overlays]) if (!b.hit || b.verification !== 'measured fs-verity') throw new Error(`a ${b.mode} boot was not a measured fs-verity hit (${b.hit ? 'hit' : 'miss'}, ${b.verification}): the ratio would not be the goal's`)
    const t = (b: BootFigures, k: string): number => b.timings[k] ?? 0
    const verify = (b: BootFigures): number => t(b, 'cache') + t(b, 'manifest') + t(b, 'fetch')
    const med = (xs: number[]): number => Math.round(median(xs))
    const unsquashfs = med(unpacks.map((b) => t(b, 'root.unsquashfs')))
    const ovVerify = med(overlays.map(verify))
    const ovMounts = med(overlays.map((b) => t(b, 'root')))
    const ovStep = med(overlays.map((b) => verify(b) + t(b, 'root')))
    const rootParts = (b: BootFigures): string => Object.entries(b.timings).filter(([k]) => k.startsWith('root.')).map(([k, v]) => `${k.slice(5)} ${v}`).join(', ')
    const row = (label: string, b: BootFigures): string =>
      `| ${label} | ${b.verification} | ${b.bytesReadVerifying} | ${t(b, 'cache')} + ${t(b, 'manifest')} + ${t(b, 'fetch')} | ${t(b, 'root')} (${rootParts(b)}) | ${t(b, 'total')} | ${b.wallMs} |`
    const pct = (x: number): string => `${((100 * x) / unsquashfs).toFixed(2)} %`
    const out = [
      `VM root step (issue #19, fs-verity), **QEMU TCG, one vCPU: every time is emulation's**: the Debian 12 VM image plus ${PAYLOAD_DIRS.join(' ')} — ${(image.unpackedBytes / 1e9).toFixed(2)} GB, ${image.files} files unpacked — as a ${(image.bytes / 1e6).toFixed(0)} MB zstd squashfs; one disk, ${ROUNDS} round(s) (medians), load average ${loadBefore} before, ${loadAfter} after:`,
      '',
      '| what | ms |',
      '|---|---|',
      `| \`unsquashfs\` of the cached object into the root partition (the unpack-mode hit's own \`root.unsquashfs\`) | ${unsquashfs} |`,
      `| overlay hit: verification (open cache + manifest + fetch: measured fs-verity) | ${ovVerify} |`,
      `| overlay hit: mounts (\`root\`: loop + check + trash + overlay) | ${ovMounts} |`,
      `| **overlay root step (verification + mounts) / unsquashfs** (goal ≤ 5 %, next turn ≤ 1 %) | **${pct(ovStep)}** |`,
      `| overlay mounts alone / unsquashfs | ${pct(ovMounts)} |`,
      `| bytes read from the cache device while verifying (overlay hit) / object size | ${med(overlays.map((b) => b.bytesReadVerifying))} / ${image.bytes} (${((100 * med(overlays.map((b) => b.bytesReadVerifying))) / image.bytes).toFixed(3)} %) |`,
      '',
      '| boot (same disk) | check | bytes read verifying | cache + manifest + fetch (ms) | root step (ms) | stage total (ms) | QEMU wall (ms) |',
      '|---|---|---|---|---|---|---|',
      row('1, cold, overlay (download, seal)', cold),
      ...unpacks.flatMap((b, i) => [row(`${2 + 2 * i}, hit, unpack`, b), row(`${3 + 2 * i}, hit, overlay`, overlays[i]!)]),
    ]
    process.stdout.write(out.join('\n') + '\n')
  } finally {
    await head.close({ abort: true })
  }
})
