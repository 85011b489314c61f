/**
 * The VM test harness: a real Debian kernel and our dracut initramfs booted in
 * QEMU (TCG: /dev/kvm does not work here, notes/vm-boot.md), with a partitioned
 * virtio disk image made without loop devices (sfdisk + `mkfs.ext4 -E offset=`),
 * read back after QEMU exits with `debugfs 'disk.img?offset=N'`.
 *
 * Every QEMU run is wrapped in `timeout`; the console goes to a file the test
 * reads after QEMU exits. The kernel's `panic=-1` plus QEMU's `-no-reboot` makes a
 * panic or a reboot end the run, and the booted root's init powers off with sysrq.
 */
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, copyFile, mkdir, open, readdir, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { bundleFiles } from '../helpers/bundle.js'

const execFileP = promisify(execFile)
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
/** Inputs that are expensive to make (vmlinux, initramfs) are kept here by input hash. */
export const CACHE_DIR = process.env.BOOT_AGENT_VM_CACHE ?? join(tmpdir(), 'boot-agent-vm-cache')
/** One boot under TCG takes ~20–40 s on an idle host, ~200 s on this 2-core host under load 10+. */
export const BOOT_TIMEOUT_S = Number(process.env.BOOT_AGENT_VM_TIMEOUT_S ?? 420)
const SECTOR = 512
const MIB = 1024 * 1024

const sh = async (cmd: string, args: string[], opts: { input?: string; maxBuffer?: number } = {}): Promise<string> => {
  if (opts.input === undefined) {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: opts.maxBuffer ?? 64 * MIB, encoding: 'utf8' })
    return stdout
  }
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolvePromise(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`))))
    child.stdin.end(opts.input)
  })
}

export interface Kernel {
  kver: string
  vmlinuz: string
  /** What QEMU boots: the uncompressed vmlinux when it could be extracted (PVH), else vmlinuz. */
  image: string
}

/** The newest installed kernel that has its modules (linux-image-amd64). */
export const findKernel = async (): Promise<Kernel> => {
  const forced = process.env.BOOT_AGENT_VM_KVER
  const names = (await readdir('/boot')).filter((n) => n.startsWith('vmlinuz-'))
  const kvers = names
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((k) => existsSync(join('/lib/modules', k)) && (forced === undefined || k === forced))
    .sort()
  const kver = kvers.at(-1)
  if (kver === undefined) throw new Error('no /boot/vmlinuz-* with /lib/modules/<kver> (install linux-image-amd64)')
  const vmlinuz = join('/boot', `vmlinuz-${kver}`)
  return { kver, vmlinuz, image: await extractVmlinux(vmlinuz) }
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46])

/**
 * The Debian kernel self-decompresses (xz) under TCG in ~2.7 s; the ELF inside
 * has a PVH entry, so QEMU can boot it directly. Falls back to vmlinuz when the
 * payload is not xz or does not decompress to an ELF.
 */
export const extractVmlinux = async (vmlinuz: string): Promise<string> => {
  const st = await stat(vmlinuz)
  const out = join(CACHE_DIR, `vmlinux-${createHash('sha256').update(`${vmlinuz}:${st.size}:${st.mtimeMs}`).digest('hex').slice(0, 16)}`)
  if (existsSync(out)) return out
  await mkdir(CACHE_DIR, { recursive: true })
  const data = await readFile(vmlinuz)
  const at = data.indexOf(XZ_MAGIC)
  if (at < 0) return vmlinuz
  const tmp = `${out}.${process.pid}.tmp`
  const elf = await new Promise<boolean>((resolvePromise) => {
    // xz stops with an error at the trailing bytes after the stream; the output is whole.
    const child = spawn('xz', ['-dc'], { stdio: ['pipe', 'pipe', 'ignore'] })
    const chunks: Buffer[] = []
    child.stdout.on('data', (d: Buffer) => chunks.push(d))
    child.on('error', () => resolvePromise(false))
    child.on('close', () => {
      const body = Buffer.concat(chunks)
      if (body.subarray(0, 4).equals(ELF_MAGIC)) {
        writeFile(tmp, body).then(() => resolvePromise(true), () => resolvePromise(false))
      } else resolvePromise(false)
    })
    child.stdin.on('error', () => undefined)
    child.stdin.end(data.subarray(at))
  })
  if (!elf) return vmlinuz
  await rename(tmp, out)
  return out
}

export interface Initramfs {
  path: string
  bytes: number
  /** False when it came from the cache of a previous run with the same inputs. */
  built: boolean
  buildMs: number
}

const hashTree = async (h: ReturnType<typeof createHash>, dir: string): Promise<void> => {
  for (const name of (await readdir(dir)).sort()) {
    const p = join(dir, name)
    const st = await stat(p)
    if (st.isDirectory()) await hashTree(h, p)
    else h.update(`${p}\0${st.mode}\0`).update(await readFile(p))
  }
}

/** Cached images (initramfs, OS) unused for this long are removed. */
const PRUNE_UNUSED_MS = 60 * 60_000

/**
 * Removes cached files named `prefix…suffix` other than `keep` once no run has used
 * them for PRUNE_UNUSED_MS: another checkout's test run may be booting one right now.
 */
export const pruneCache = async (prefix: string, suffix: string, keep: string): Promise<void> => {
  for (const name of await readdir(CACHE_DIR)) {
    const p = join(CACHE_DIR, name)
    if (!name.startsWith(prefix) || !name.endsWith(suffix) || p === keep) continue
    const st = await stat(p).catch(() => undefined)
    if (st && Date.now() - st.mtimeMs > PRUNE_UNUSED_MS) await rm(p, { force: true })
  }
}

/**
 * Builds (once per set of inputs) an initramfs with dracut/50boot-agent through
 * scripts/build-initramfs.sh. The key covers the build script, the kernel version,
 * the node binary, and either the module, the unit and the bundle's files from this
 * tree or, with `deb`, the package's bytes (module, unit, bundle and runtime) and
 * the flavour. `testModule`: a test-only dracut module directory added to the image
 * (scripts/build-initramfs.sh --test-module), part of the key. Without `compress`, an
 * image from the package is compressed as the package's dracut.conf.d snippet says
 * (what an administrator's `dracut --add boot-agent` does), one from this tree with zstd.
 */
/** How long a builder waits for another process building the same artifact (the xz initramfs takes minutes). */
const BUILD_LOCK_WAIT_S = 3600

/**
 * Runs `argv` (which writes `tmp`) and renames `tmp` to `out`, unless `out`
 * exists once the artifact's lock is held: two test files asking for the same
 * image at once (tap runs two files side by side) build it once, the second
 * waiting for the first (util-linux `flock`, bounded), instead of both.
 */
export const buildOnce = async (out: string, tmp: string, argv: string[]): Promise<void> => {
  const script = 'out=$1 tmp=$2; shift 2; [ -e "$out" ] && exit 0; "$@" && mv -f -- "$tmp" "$out"'
  await sh('flock', ['-w', String(BUILD_LOCK_WAIT_S), `${out}.lock`, 'sh', '-c', script, 'build-once', out, tmp, ...argv], { maxBuffer: 256 * MIB })
}

export const buildInitramfs = async (opts: { kver: string; bundle: string; compress?: string; deb?: string; flavour?: 'hook' | 'systemd'; testModule?: string }): Promise<Initramfs> => {
  const h = createHash('sha256')
  h.update(await readFile(join(REPO, 'scripts', 'build-initramfs.sh')))
  if (opts.deb !== undefined) {
    // From the package: its bytes carry the module, the unit, the bundle and the runtime.
    h.update(await readFile(opts.deb)).update(`flavour:${opts.flavour ?? 'hook'}`)
  } else {
    await hashTree(h, join(REPO, 'dracut'))
    h.update(await readFile(join(REPO, 'systemd', 'boot-agent-initrd.service')))
    for (const f of await bundleFiles(opts.bundle)) h.update(`${f}\0`).update(await readFile(join(dirname(opts.bundle), f)))
  }
  if (opts.testModule !== undefined) await hashTree(h, opts.testModule)
  const compress = opts.compress ?? (opts.deb !== undefined ? undefined : 'zstd')
  const node = process.execPath
  const nst = await stat(node)
  h.update(`${node}:${nst.size}:${nst.mtimeMs}:${opts.kver}:${compress ?? 'package'}`)
  const out = join(CACHE_DIR, `initramfs-${h.digest('hex').slice(0, 16)}.img`)
  if (existsSync(out)) {
    // Mark it in use, so a concurrent run building other inputs does not prune it.
    const now = new Date()
    await utimes(out, now, now)
    return { path: out, bytes: (await stat(out)).size, built: false, buildMs: 0 }
  }
  await mkdir(CACHE_DIR, { recursive: true })
  const t0 = Date.now()
  const tmp = `${out}.${process.pid}.tmp`
  await buildOnce(out, tmp, [
    'bash', join(REPO, 'scripts', 'build-initramfs.sh'),
    '--kver', opts.kver, '--out', tmp, '--bundle', opts.bundle, '--node', node,
    ...(compress !== undefined ? ['--compress', compress] : []),
    ...(opts.deb !== undefined ? ['--deb', opts.deb, '--flavour', opts.flavour ?? 'hook'] : []),
    ...(opts.testModule !== undefined ? ['--test-module', opts.testModule] : []),
  ])
  // Images built from older inputs are pruned (~55 MB each).
  await pruneCache('initramfs-', '.img', out)
  return { path: out, bytes: (await stat(out)).size, built: true, buildMs: Date.now() - t0 }
}

export interface PartitionSpec {
  /** GPT partition name and ext4 label (the same, as ClusterWare's installer does). */
  label: string
  mib: number
  /** Files to put into the new filesystem (mkfs.ext4 -d). */
  from?: string
  /** false: no filesystem at all (the agent formats it: rd.bootagent.format). Default true. */
  format?: boolean
}

export interface Partition {
  label: string
  /** Byte offset of the partition in the image. */
  offset: number
  bytes: number
}

export interface Disk {
  path: string
  parts: Partition[]
  part(label: string): Partition
}

/**
 * A GPT disk image with ext4 partitions carrying GPT names and ext4 labels, made
 * without loop devices: sfdisk writes the table, `mkfs.ext4 -E offset=` each
 * filesystem in place (notes/vm-boot.md pitfall 9).
 */
export const makeDisk = async (path: string, specs: PartitionSpec[]): Promise<Disk> => {
  const firstLba = 2048
  const total = firstLba * SECTOR + specs.reduce((n, s) => n + s.mib * MIB, 0) + 2 * MIB
  await writeFile(path, '')
  const fh = await open(path, 'r+')
  await fh.truncate(total)
  await fh.close()
  const script = ['label: gpt', ...specs.map((s, i) => `${i === 0 ? `start=${firstLba}, ` : ''}size=${s.mib}MiB, name=${s.label}`)].join('\n')
  await sh('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], { input: script + '\n' })
  const table = JSON.parse(await sh('sfdisk', ['-J', path])) as { partitiontable: { partitions: { start: number; size: number; name: string }[] } }
  const parts: Partition[] = []
  for (const [i, s] of specs.entries()) {
    const p = table.partitiontable.partitions[i]
    if (p === undefined || p.name !== s.label) throw new Error(`sfdisk did not create partition ${s.label}`)
    const offset = p.start * SECTOR
    const bytes = p.size * SECTOR
    if (s.format !== false) await sh('mkfs.ext4', ['-q', '-F', '-L', s.label, '-b', '4096', '-E', `offset=${offset}`, ...(s.from ? ['-d', s.from] : []), path, `${bytes / 1024}k`])
    parts.push({ label: s.label, offset, bytes })
  }
  return {
    path,
    parts,
    part(label) {
      const p = parts.find((x) => x.label === label)
      if (p === undefined) throw new Error(`no partition ${label} on ${path}`)
      return p
    },
  }
}

/** Runs one debugfs request against a partition of the image (read-only unless write). */
export const debugfs = async (disk: Disk, label: string, request: string, write = false): Promise<string> => {
  const spec = `${disk.path}?offset=${disk.part(label).offset}`
  const { stdout } = await execFileP('debugfs', [...(write ? ['-w'] : []), '-R', request, spec], { maxBuffer: 64 * MIB, encoding: 'utf8' })
  return stdout
}

/** Lists a directory tree of a partition (paths of regular files), via debugfs. */
export const listFiles = async (disk: Disk, label: string, dir = '/'): Promise<string[]> => {
  const out = await debugfs(disk, label, `ls -p ${dir}`)
  const files: string[] = []
  for (const line of out.split('\n')) {
    // ls -p: /inode/mode/uid/gid/name/size/
    const f = line.split('/')
    const mode = f[2]
    const name = f[5]
    if (mode === undefined || name === undefined || name === '.' || name === '..' || name === '') continue
    const p = dir === '/' ? `/${name}` : `${dir}/${name}`
    if (mode.startsWith('04')) files.push(...(await listFiles(disk, label, p)))
    else if (mode.startsWith('10')) files.push(p)
  }
  return files
}

/** Reads a file of a partition after QEMU exited. */
export const readDiskFile = async (disk: Disk, label: string, path: string): Promise<Buffer> => {
  const tmp = join(tmpdir(), `ba-debugfs-${process.pid}-${Date.now()}`)
  try {
    await debugfs(disk, label, `dump ${path} ${tmp}`)
    return await readFile(tmp)
  } finally {
    await rm(tmp, { force: true })
  }
}

/**
 * Flips bytes of a file inside the image in place (the file's own data blocks,
 * found with debugfs `blocks`), as a failing disk or a stray write would.
 */
export const corruptDiskFile = async (disk: Disk, label: string, path: string, atByte: number, length = 16): Promise<void> => {
  const stats = await debugfs(disk, label, `stat ${path}`)
  const bs = /Block size:\s+(\d+)/.exec(await debugfs(disk, label, 'stats -h'))?.[1]
  const blockSize = Number(bs ?? 4096)
  if (!/Type: regular/.test(stats)) throw new Error(`${path} is not a regular file on ${label}`)
  const blocks = (await debugfs(disk, label, `blocks ${path}`)).trim().split(/\s+/).map(Number)
  const block = blocks[Math.floor(atByte / blockSize)]
  if (block === undefined || !Number.isFinite(block)) throw new Error(`${path}: no block for byte ${atByte}`)
  const pos = disk.part(label).offset + block * blockSize + (atByte % blockSize)
  const fh = await open(disk.path, 'r+')
  try {
    const buf = Buffer.alloc(length)
    await fh.read(buf, 0, length, pos)
    for (let i = 0; i < length; i++) buf[i] = (buf[i] ?? 0) ^ 0xff
    await fh.write(buf, 0, length, pos)
  } finally {
    await fh.close()
  }
}

export interface VmResult {
  console: string
  exitCode: number | null
  timedOut: boolean
  ms: number
}

export interface BootOptions {
  kernel: Kernel
  initrd: string
  disk?: Disk
  /** Appended after the harness's own console/panic arguments. */
  cmdline: string
  consoleFile: string
  timeoutS?: number
  memMiB?: number
  /** More virtio disks after `disk`, each with a serial (/dev/disk/by-id/virtio-<serial> in the guest). */
  extraDisks?: { path: string; serial: string }[]
}

/**
 * Boots QEMU (TCG, -smp 1: faster than 2 on a 2-core host), virtio disk/NIC/RNG,
 * user networking (the host's 127.0.0.1 is 10.0.2.2 to the guest), under
 * `timeout`. Resolves when QEMU exits.
 */
export const bootVm = async (o: BootOptions): Promise<VmResult> => {
  const timeoutS = o.timeoutS ?? BOOT_TIMEOUT_S
  const args = [
    '--kill-after=10', String(timeoutS),
    'qemu-system-x86_64',
    '-machine', 'q35', '-accel', process.env.BOOT_AGENT_VM_ACCEL ?? 'tcg', '-cpu', 'max', '-smp', '1', '-m', String(o.memMiB ?? 1536),
    '-nodefaults', '-nographic', '-no-reboot',
    '-serial', `file:${o.consoleFile}`, '-monitor', 'none',
    '-kernel', o.kernel.image, '-initrd', o.initrd,
    '-append', `console=ttyS0 panic=-1 ${o.cmdline}`,
    '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,romfile=',
    '-device', 'virtio-rng-pci',
    ...(o.disk ? ['-drive', `file=${o.disk.path},format=raw,if=none,id=d0,cache=unsafe`, '-device', 'virtio-blk-pci,drive=d0'] : []),
    ...(o.extraDisks ?? []).flatMap((d, i) => ['-drive', `file=${d.path},format=raw,if=none,id=x${i},cache=unsafe`, '-device', `virtio-blk-pci,drive=x${i},serial=${d.serial}`]),
  ]
  const t0 = Date.now()
  const exitCode = await new Promise<number | null>((resolvePromise, reject) => {
    const child = spawn('timeout', args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    child.on('error', reject)
    child.on('close', (code) => {
      if (code !== 0 && code !== 124 && err.includes('qemu-system')) reject(new Error(`qemu failed (${code}): ${err}`))
      else resolvePromise(code)
    })
  })
  const consoleText = await readFile(o.consoleFile, 'utf8').catch(() => '')
  return { console: consoleText, exitCode, timedOut: exitCode === 124 || exitCode === 137, ms: Date.now() - t0 }
}

/** The text between `BEGIN` and `END` marker lines the root's init printed. */
export const section = (consoleText: string, name: string): string | undefined => {
  const m = new RegExp(`${name}-BEGIN\\r?\\n([\\s\\S]*?)\\r?\\n${name}-END`).exec(consoleText)
  return m?.[1]
}

/** Seconds since kernel start of the first console line matching `re` (kernel/dracut stamped). */
export const stampOf = (consoleText: string, re: RegExp): number | undefined => {
  for (const line of consoleText.split('\n')) {
    if (!re.test(line)) continue
    const m = /\[\s*(\d+\.\d+)\]/.exec(line)
    if (m?.[1]) return Number(m[1])
  }
  return undefined
}

export interface Phases {
  /** Kernel start to `Run /init` (s). */
  kernelS?: number
  /** `Run /init` to the boot stage starting (udev, modules, DHCP) (s). */
  initramfsS?: number
  /** The boot stage itself (s). */
  agentS?: number
  /** Boot stage done to the new root's init running (s). */
  switchRootS?: number
  /** Kernel start to the new root's init (s). */
  totalS?: number
}

/** Per-phase boot timings read from a console log. */
export const phases = (consoleText: string): Phases => {
  const init = stampOf(consoleText, /Run \/init as init process/)
  const start = stampOf(consoleText, /boot-agent: boot stage starting/)
  const done = stampOf(consoleText, /boot-agent: boot stage finished/)
  const up = /BA-ROOT-UP uptime=(\d+\.\d+)/.exec(consoleText)?.[1]
  const rootUp = up === undefined ? undefined : Number(up)
  const d = (a?: number, b?: number): number | undefined => (a === undefined || b === undefined ? undefined : Math.round((b - a) * 100) / 100)
  return { kernelS: init, initramfsS: d(init, start), agentS: d(start, done), switchRootS: d(done, rootUp), totalS: rootUp }
}

/** Shared libraries of an ELF binary (ldd), to copy a working node into a root image. */
const libsOf = async (bin: string): Promise<string[]> => {
  const out = await sh('ldd', [bin])
  const libs = new Set<string>()
  for (const m of out.matchAll(/(\/\S+)\s+\(0x/g)) if (m[1]) libs.add(m[1])
  return [...libs]
}

export interface RootOptions {
  /** Text the root's init prints as its identity (so a test can tell images apart). */
  tag: string
  /** Put node + the bundle into the root and run this agent command after boot. */
  daemon?: { bundle: string; args: string[] }
}

/**
 * A tiny OS tree: static busybox and an /sbin/init that prints what the boot
 * stage left (marker, boot record), optionally runs the daemon, then powers off.
 * dracut's usable_root wants /proc, /sys and /dev to exist.
 */
export const makeRootTree = async (dir: string, o: RootOptions): Promise<string> => {
  for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'run', 'tmp', 'etc', 'var/lib', 'usr/bin', 'usr/lib/boot-agent']) await mkdir(join(dir, d), { recursive: true })
  await copyFile('/bin/busybox', join(dir, 'bin', 'busybox'))
  await chmod(join(dir, 'bin', 'busybox'), 0o755)
  for (const tool of ['sh', 'cat', 'echo', 'mount', 'cut', 'sleep', 'ls', 'find', 'poweroff', 'ip', 'sync', 'umount']) await symlink('busybox', join(dir, 'bin', tool))
  await writeFile(join(dir, 'etc', 'image-tag'), `${o.tag}\n`)
  let daemon = ''
  if (o.daemon) {
    const node = process.execPath
    await sh('strip', ['-g', '-o', join(dir, 'usr', 'bin', 'node'), node])
    for (const lib of await libsOf(node)) {
      await mkdir(join(dir, dirname(lib)), { recursive: true })
      await copyFile(lib, join(dir, lib))
    }
    // The whole bundle: the entry under its installed name, its chunks beside it.
    const files = await bundleFiles(o.daemon.bundle)
    for (const [i, f] of files.entries()) {
      const to = join(dir, 'usr', 'lib', 'boot-agent', i === 0 ? 'boot-agent.mjs' : f)
      await mkdir(dirname(to), { recursive: true })
      await copyFile(join(dirname(o.daemon.bundle), f), to)
    }
    daemon = [
      'echo "BA-DAEMON-START"',
      `/usr/bin/node /usr/lib/boot-agent/boot-agent.mjs ${o.daemon.args.join(' ')}`,
      'echo "BA-DAEMON-EXIT $?"',
    ].join('\n')
  }
  const init = `#!/bin/sh
# The test image's init: report what the boot stage left, then power off.
mount -t proc proc /proc
# dracut moved /sys, /dev and /run over at switch_root; mount what is missing.
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
echo "BA-ROOT-UP uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "BA-TAG $(cat /etc/image-tag)"
echo "BA-ROOTFS $(cut -d' ' -f1-3 /proc/mounts | while read d m t; do [ "$m" = / ] && echo "$d $t"; done)"
echo "BA-MARKER-BEGIN"
cat /.boot-agent-image 2>/dev/null
echo ""
echo "BA-MARKER-END"
echo "BA-RECORD-BEGIN"
cat /run/boot-agent/boot-record.json 2>/dev/null
echo ""
echo "BA-RECORD-END"
${daemon}
# Checkpoint every ext4 journal before power-off, so debugfs on the host (which
# does not replay journals) sees what the node wrote: sync, then remount read-only.
sync
cut -d' ' -f2,3 /proc/mounts | while read m t; do
  case "$t" in ext4|xfs) mount -o remount,ro "$m" 2>/dev/null || echo "BA-REMOUNT-FAILED $m" ;; esac
done
echo "BA-POWEROFF"
echo o > /proc/sysrq-trigger
sleep 30
`
  await writeFile(join(dir, 'sbin', 'init'), init, { mode: 0o755 })
  return dir
}

/** mksquashfs with no progress bar (notes pitfall 12). */
export const mksquashfs = async (tree: string, out: string, comp = 'gzip'): Promise<void> => {
  await rm(out, { force: true })
  await sh('mksquashfs', [tree, out, '-comp', comp, '-noappend', '-no-progress', '-quiet', '-all-root'])
}
