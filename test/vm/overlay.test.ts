/**
 * Issue 19's VM scenarios: the overlay root on the Debian 12 image (systemd
 * initramfs from our .deb), under the Debian 6.1 kernel, which has fs-verity
 * (this machine's kernel does not: these paths run only here).
 *
 * Boots share one disk each, in sequence (a TCG boot takes minutes):
 *  fs-verity cache (the agent formats it: rd.bootagent.format=cache → ext4 -O verity)
 *   1. cold: downloaded, verified, sealed with fs-verity, overlay root;
 *   2. hit: verified by the kernel's measurement, next to no bytes read from the cache device;
 *   -- one block of the object damaged on the raw partition (host side, between boots);
 *   3. hit again (the Merkle tree is intact, so the measurement still agrees): the damaged
 *      block is refused at read (EIO), the kernel's fs-verity record reaches the head as an
 *      io-error with the digest and the device, and the daemon marks the chunk;
 *   4. the marked object is read, not measured: only the bad chunk is fetched, into a new
 *      file (a sealed one cannot be written), sealed again.
 *  plain cache (ext4 without verity: today's fast verify)
 *   5. cold, then the mounted object damaged under the running root (the probe writes into
 *      it) and read: SQUASHFS errors at the head with the digest, the chunk marked;
 *   6. the fast verify finds the chunk, only it is fetched.
 *
 * The damage lands in the image's canary file (scripts/build-vm-image.sh --test-probe):
 * its first squashfs block is random (stored as is, so found in the image by its
 * bytes), its second compressed right after it, its third random again (so the page
 * around the damage holds only the canary); the probe reads it with ba.vmtest.canary.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gate } from '../helpers/capability.js'
import type { Head } from '../../agent/head/server.js'
import { BOOT_TIMEOUT_S, bootVm, buildInitramfs, corruptDiskFile, findKernel, makeDisk, REPO, type Disk, type Initramfs, type Kernel, type VmResult } from './harness.js'
import { buildOsImage, findPackage, VM_TEST_MODULE, makeReportDisk, messageOf, readReport, shortLines, type JournalEntry, type Report } from './debian.js'
import { publishVmImage, startVmHead, storedEvents } from './head-store.js'

const execFileP = promisify(execFile)

// Image and initramfs builds (first run only) plus 6 boots of a systemd root under TCG.
t.setTimeout(60 * 60_000)

const skip = gate('vm', 'qemu', 'root', 'squashfs-tools')
const BUNDLE = join(REPO, 'dist', 'boot-agent.mjs')
const CANARY = 'usr/local/lib/ba-vmtest/canary'

interface Ctx {
  image: { sha256: string; size: number; chunks: number }
  kernel: Kernel
  initrd: Initramfs
  head: Head
  dir: string
  store: string
  /**
   * Byte offset in the image of the canary's second (compressed) block: a few dozen bytes
   * of zstd, followed by other files' data, so the damage goes a few bytes in.
   */
  damageAt: number
}
let ctx: Ctx | undefined

/** Where the canary's compressed block starts in the squashfs `image` (its random first block is stored as is). */
const canaryDamageOffset = async (image: string): Promise<number> => {
  const { stdout } = await execFileP('unsquashfs', ['-cat', image, CANARY], { encoding: 'buffer', maxBuffer: 1 << 20 })
  const bytes = await readFile(image)
  const blockSize = bytes.readUInt32LE(12) // squashfs superblock: block_size
  const at = bytes.indexOf(stdout.subarray(0, 64))
  if (at < 0 || stdout.length !== 3 * blockSize) throw new Error(`the canary (${stdout.length} bytes) is not three ${blockSize}-byte blocks found in ${image}`)
  // The third block (random, stored as is) must follow the compressed one within a page: nothing else is damaged.
  if (bytes.indexOf(stdout.subarray(2 * blockSize, 2 * blockSize + 64)) - (at + blockSize) > 4096) throw new Error('the canary\'s compressed block is not followed by its third block')
  return at + blockSize
}

let bootNo = 0
const boot = async (node: string, disk: Disk, extra: string): Promise<{ r: VmResult; report?: Report }> => {
  const c = ctx!
  bootNo++
  const reportDisk = await makeReportDisk(join(c.dir, `report-${bootNo}.img`))
  const r = await bootVm({
    kernel: c.kernel,
    initrd: c.initrd.path,
    disk,
    extraDisks: [reportDisk],
    cmdline: ['root=bootagent', `rd.bootagent.server=http://10.0.2.2:${c.head.port}`, `rd.bootagent.node=${node}`, 'rd.bootagent.devtimeout=20', 'rd.shell=0 rd.emergency=poweroff', 'ba.vmtest.report', extra].join(' '),
    consoleFile: join(c.dir, `console-${bootNo}-${node}.log`),
    memMiB: 2048,
    timeoutS: 2 * BOOT_TIMEOUT_S,
  })
  t.comment(`boot ${bootNo} (${node}${extra ? `, ${extra}` : ''}): qemu exit ${r.exitCode} after ${r.ms} ms`)
  const report = await readReport(reportDisk.path)
  return { r, ...(report ? { report } : {}) }
}

const stageEntries = (j: JournalEntry[]): JournalEntry[] => j.filter((e) => e.SYSLOG_IDENTIFIER === 'boot-agent' && e._SYSTEMD_UNIT === 'boot-agent-initrd.service')
const daemonEntries = (j: JournalEntry[]): JournalEntry[] => j.filter((e) => e._SYSTEMD_UNIT === 'boot-agent.service' && e.SYSLOG_IDENTIFIER === 'boot-agent')

/** The stage's "image verified: <check>, <N> bytes read from the cache device" line. */
const verification = (report: Report): { check: string; bytesRead: number } | undefined => {
  for (const e of stageEntries(report.journal)) {
    const m = /image verified: (.+?), (\d+) bytes read from the cache device/.exec(messageOf(e))
    if (m) return { check: m[1]!, bytesRead: Number(m[2]) }
  }
  return undefined
}
const stageSays = (report: Report, re: RegExp): boolean => stageEntries(report.journal).some((e) => re.test(messageOf(e)))

interface Event {
  kind: string
  image?: { sha256?: string }
  data: { source?: string; device?: string; class?: string; object?: { sha256?: string }; chunksRepaired?: number; corruptChunks?: number[]; action?: string; bytesFetched?: number }
}
const events = async (node: string): Promise<Event[]> => (await storedEvents(ctx!.store, node)) as unknown as Event[]

t.before(async () => {
  if (skip.skip) return
  const [dir, kernel, deb, t0] = [t.testdir(), await findKernel(), await findPackage(), Date.now()]
  const [os, initrd] = await Promise.all([buildOsImage(deb), buildInitramfs({ kver: kernel.kver, bundle: BUNDLE, deb, flavour: 'systemd', testModule: VM_TEST_MODULE })])
  t.comment(`Debian image ${os.path}: ${os.bytes} bytes, ${os.built ? `built in ${os.buildMs} ms` : 'cached'}; initramfs ${initrd.built ? `built in ${initrd.buildMs} ms` : 'cached'}; setup ${Date.now() - t0} ms`)
  const store = join(dir, 'store')
  await mkdir(store, { recursive: true })
  const image = await publishVmImage(os.path, 'debian', store)
  const manifest = JSON.parse(await readFile(image.manifestPath, 'utf8')) as { fsverityDigest?: string; chunks: unknown[] }
  if (!manifest.fsverityDigest) throw new Error('the published manifest carries no fsverityDigest')
  // PARTLABEL: the fs-verity disk's cache partition has no filesystem (hence no label) until the agent formats it.
  const partitions = { cache: 'PARTLABEL=cwcache', root: 'LABEL=cwroot' }
  const policies = { cacheFull: 'ram', verify: 'fast', onfail: 'emergency', rootMode: 'overlay' }
  const head = await startVmHead(dir, store, { image: 'debian', style: 'disked', partitions, policies }, ['ov-verity', 'ov-plain'])
  ctx = { dir, kernel, initrd, head, store, image: { sha256: image.sha256, size: image.size, chunks: manifest.chunks.length }, damageAt: await canaryDamageOffset(os.path) }
  t.comment(`image ${image.sha256}: ${image.size} bytes, ${manifest.chunks.length} chunks; fsverityDigest ${manifest.fsverityDigest}; canary's compressed block at byte ${ctx.damageAt}`)
})

t.teardown(async () => {
  await ctx?.head.close({ abort: true })
})

const objectPath = (sha: string): string => `/objects/sha256/${sha.slice(0, 2)}/${sha.slice(2)}`

t.test('fs-verity cache: sealed at the cold boot, measured at a hit, a damaged block caught at read and reported, only its chunk repaired', skip, async (t) => {
  const c = ctx!
  const disk = await makeDisk(join(c.dir, 'disk-verity.img'), [
    { label: 'cwcache', mib: 320, format: false },
    { label: 'cwroot', mib: 256 },
  ])
  const opts = 'rd.bootagent.format=cache'

  // 1. Cold.
  const b1 = await boot('ov-verity', disk, opts)
  if (!b1.report) return t.fail(`boot 1: no report (console tail: ${b1.r.console.slice(-3000)})`)
  t.comment(`boot 1 stage:\n${shortLines(stageEntries(b1.report.journal))}`)
  t.equal(b1.report.state['boot-agent.service'], 'active', 'boot 1: the daemon runs in the booted overlay root')
  t.ok(stageSays(b1.report, /formatting cache partition/), 'boot 1: the agent formatted the cache (ext4 with verity: the kernel has it)')
  t.match(verification(b1.report), { check: /^download/ }, 'boot 1: a download, every chunk checked as written')
  t.ok(stageSays(b1.report, /cache: object sealed/), 'boot 1: the object sealed with fs-verity after its full verification')

  // 2. Hit: measured.
  const b2 = await boot('ov-verity', disk, opts)
  if (!b2.report) return t.fail('boot 2: no report')
  const v2 = verification(b2.report)
  t.comment(`boot 2 stage:\n${shortLines(stageEntries(b2.report.journal))}`)
  t.equal(v2?.check, 'measured fs-verity', 'boot 2: the hit verified by the kernel\'s measurement against the manifest\'s fsverityDigest')
  t.ok(v2 && v2.bytesRead < c.image.size / 20, `boot 2: ${v2?.bytesRead} bytes read from the cache device while verifying a ${c.image.size}-byte object (< 5 %)`)

  // Between boots: one block of the sealed object damaged on the raw partition.
  await corruptDiskFile(disk, 'cwcache', objectPath(c.image.sha256), c.damageAt + 4)

  // 3. Hit again (the tree is intact); the damaged block refused at read, reported with the digest.
  const b3 = await boot('ov-verity', disk, `${opts} ba.vmtest.canary`)
  if (!b3.report) return t.fail('boot 3: no report')
  t.equal(verification(b3.report)?.check, 'measured fs-verity', 'boot 3: still measured (fs-verity checks blocks when they are read, not at the hit)')
  t.match(b3.r.console, /BA-CANARY-READ rc=[1-9]/, 'boot 3: reading the damaged file failed (EIO)')
  const kernelLines = b3.report.journal.filter((e) => e._TRANSPORT === 'kernel' && /fs-verity|SQUASHFS/.test(messageOf(e)))
  t.comment(`boot 3 kernel records:\n${kernelLines.slice(0, 6).map(messageOf).join('\n')}\ndaemon:\n${shortLines(daemonEntries(b3.report.journal).slice(-12))}`)
  const e3 = await events('ov-verity')
  const verityErrors = e3.filter((e) => e.kind === 'io-error' && e.data.source === 'fsverity')
  t.ok(verityErrors.length > 0, `boot 3: the fs-verity record reached the head as an io-error (${e3.map((e) => e.kind).join(', ')})`)
  t.match(verityErrors[0], { image: { sha256: c.image.sha256 }, data: { object: { sha256: c.image.sha256 }, device: /^vd[a-z]\d+$/ } }, 'with the digest and the cache device')
  t.ok(e3.some((e) => e.kind === 'integrity' && e.data.action === 'marked-corrupt' && (e.data.corruptChunks?.length ?? 0) > 0), 'the daemon marked the bad chunk(s) for the next boot')

  // 4. Marked: read, not measured; only the bad chunk fetched into a new file, sealed.
  const b4 = await boot('ov-verity', disk, opts)
  if (!b4.report) return t.fail('boot 4: no report')
  t.comment(`boot 4 stage:\n${shortLines(stageEntries(b4.report.journal))}`)
  t.ok(stageSays(b4.report, /chunk\(s\) marked corrupt at run time/), 'boot 4: the sealed object was read because chunks were marked')
  const repaired = (await events('ov-verity')).filter((e) => e.kind === 'integrity' && e.data.chunksRepaired !== undefined).at(-1)
  t.ok(repaired && repaired.data.chunksRepaired! >= 1 && repaired.data.chunksRepaired! <= 2, `boot 4: ${repaired?.data.chunksRepaired} of ${c.image.chunks} chunks fetched again (${repaired?.data.bytesFetched} bytes)`)
  t.ok(stageSays(b4.report, /cache: object sealed/), 'boot 4: the repaired object sealed again')
  t.equal(b4.report.state['boot-agent.service'], 'active', 'boot 4: the repaired root boots')
})

t.test('plain cache (no fs-verity): the mounted object damaged under the running root → squashfs errors at the head with the digest → next boot repairs only the bad chunk', skip, async (t) => {
  const c = ctx!
  const disk = await makeDisk(join(c.dir, 'disk-plain.img'), [
    { label: 'cwcache', mib: 192 },
    { label: 'cwroot', mib: 256 },
  ])
  // 5. Cold; then the probe damages the mounted object and reads the canary.
  const b5 = await boot('ov-plain', disk, `ba.vmtest.corrupt=${c.damageAt + 4} ba.vmtest.canary`)
  if (!b5.report) return t.fail('boot 5: no report')
  t.ok(stageSays(b5.report, /cache: object not sealed: the cache filesystem has no fs-verity/), 'boot 5: not sealed, and the record says why (ext4 without verity)')
  t.match(b5.r.console, /BA-CORRUPTED .* rc=0/, 'boot 5: the probe damaged the mounted object')
  const e5 = await events('ov-plain')
  const sq = e5.filter((e) => e.kind === 'squashfs-error')
  t.comment(`boot 5 daemon:\n${shortLines(daemonEntries(b5.report.journal).slice(-12))}`)
  t.ok(sq.length > 0, `boot 5: squashfs-error events at the head (${e5.map((e) => e.kind).join(', ')})`)
  t.match(sq[0], { image: { sha256: c.image.sha256 }, data: { object: { sha256: c.image.sha256 } } }, 'with the digest of the mounted object')
  t.ok(e5.some((e) => e.kind === 'integrity' && e.data.action === 'marked-corrupt'), 'the chunk marked for the next boot')
  // Issue 18: what `journalctl -u boot-agent -p err` shows on this node (PRIORITY 0..3 of the
  // daemon's entries in the guest's own journal): the squashfs error with the digest, in
  // prose (`-o cat` readable, no JSON), and none of the info lines.
  const daemon5 = daemonEntries(b5.report.journal)
  const errs5 = daemon5.filter((e) => Number(e.PRIORITY) <= 3)
  t.ok(errs5.some((e) => /^squashfs error: image [^\n]*sha256:[0-9a-f]{12}/.test(messageOf(e))), `journalctl -u boot-agent -p err: the squashfs error with the digest (${errs5.length} entries)`)
  t.ok(errs5.every((e) => !messageOf(e).startsWith('{')), '-o cat: prose, not JSON')
  t.ok(daemon5.filter((e) => /events delivered/.test(messageOf(e))).every((e) => e.PRIORITY === '6'), 'the info lines are filed at info (6), so -p err leaves them out')

  // 6. Fast verify finds it; only it is fetched.
  const b6 = await boot('ov-plain', disk, '')
  if (!b6.report) return t.fail('boot 6: no report')
  t.comment(`boot 6 stage:\n${shortLines(stageEntries(b6.report.journal))}`)
  const repaired = (await events('ov-plain')).filter((e) => e.kind === 'integrity' && e.data.chunksRepaired !== undefined).at(-1)
  t.ok(repaired && repaired.data.chunksRepaired! >= 1 && repaired.data.chunksRepaired! <= 2, `boot 6: ${repaired?.data.chunksRepaired} of ${c.image.chunks} chunks fetched again (${repaired?.data.bytesFetched} bytes)`)
  t.equal(b6.report.state['boot-agent.service'], 'active', 'boot 6: the repaired root boots')
})
