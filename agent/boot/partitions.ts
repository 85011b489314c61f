/**
 * Finding and mounting the node's labelled partitions (SPEC §2, §3).
 *
 * A spec (`LABEL=`, `UUID=`, `PARTLABEL=`, `PARTUUID=`, a /dev path) is
 * resolved with `blkid` (no cache: `-c /dev/null`), polling until a deadline
 * because udev may still be announcing devices. A spec that matches more than
 * one device is refused — never guess which disk (ignition's rule). Only ext4
 * and xfs are mounted. A filesystem is created only when `rd.bootagent.format`
 * allows it for that partition, and never on a removable or USB device.
 */
import { lstat, mkdir, readFile, realpath, stat, statfs } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { BootAgentError, CommandError, isErrno, messageOf } from '../core/errors.js'
import { sleep as realSleep } from '../core/clock.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import type { Logger } from '../core/log.js'
import { commands, system } from '../core/system.js'
import type { PartitionSpec } from './cmdline.js'
import type { PartitionState } from './plan.js'

export const MOUNTABLE_FSTYPES = ['ext4', 'xfs'] as const
const POLL_MS = 250
const BLKID_TIMEOUT_MS = 10_000
const MOUNT_TIMEOUT_MS = 60_000
const MKFS_TIMEOUT_MS = 5 * 60_000

export interface PartitionDeps {
  run?: Runner
  /** Where block devices are listed in sysfs (default /sys/class/block). */
  sysClassBlock?: string
  sleep?: (ms: number) => Promise<void>
  now?: () => number
  log?: Logger
  signal?: AbortSignal
}

const BLKID_TAG: Record<Exclude<PartitionSpec['kind'], 'path'>, string> = {
  label: 'LABEL',
  uuid: 'UUID',
  partlabel: 'PARTLABEL',
  partuuid: 'PARTUUID',
}

export type Resolution =
  | { state: 'found'; device: string }
  | { state: 'missing'; reason: string }
  | { state: 'ambiguous'; devices: string[]; reason: string }

/** One look: the devices matching `spec` right now. */
export const findDevices = async (spec: PartitionSpec, deps: PartitionDeps = {}): Promise<string[]> => {
  const run = deps.run ?? defaultRun
  if (spec.kind === 'path') {
    try {
      const st = await stat(spec.value)
      if (!st.isBlockDevice()) throw new BootAgentError('ENOTBLK', `${spec.value} is not a block device`, { device: spec.value })
      return [spec.value]
    } catch (e) {
      if (isErrno(e, 'ENOENT', 'ENOTDIR')) return []
      throw e
    }
  }
  // -c /dev/null: no stale cache; -o device: one matching device per line; exit 2 = none.
  const r = await run(commands.blkid, ['-c', '/dev/null', '-o', 'device', '-t', `${BLKID_TAG[spec.kind]}=${spec.value}`], {
    allowFailure: true,
    timeoutMs: BLKID_TIMEOUT_MS,
    ...(deps.signal ? { signal: deps.signal } : {}),
  })
  if (r.exitCode === 2) return []
  if (r.exitCode !== 0) throw new CommandError({ command: commands.blkid, args: [], exitCode: r.exitCode, stderr: r.stderr })
  return [...new Set(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean))].sort()
}

/** Resolves a spec to exactly one device, waiting up to `deadlineMs` for it to appear. */
export const resolvePartition = async (spec: PartitionSpec, deadlineMs: number, deps: PartitionDeps = {}): Promise<Resolution> => {
  const now = deps.now ?? Date.now
  const sleep = deps.sleep ?? realSleep
  const until = now() + deadlineMs
  // Bounded: at most deadlineMs / POLL_MS + 1 looks.
  for (let look = 0; ; look++) {
    const devices = await findDevices(spec, deps)
    if (devices.length === 1 && devices[0] !== undefined) return { state: 'found', device: devices[0] }
    if (devices.length > 1) {
      return {
        state: 'ambiguous',
        devices,
        reason: `${devices.length} devices match ${spec.text} (${devices.join(', ')}); refusing to guess which disk`,
      }
    }
    if (now() >= until || deps.signal?.aborted) {
      return { state: 'missing', reason: `no device matched ${spec.text} within ${deadlineMs} ms (${look + 1} looks)` }
    }
    await sleep(Math.min(POLL_MS, Math.max(0, until - now())))
  }
}

/** The filesystem type blkid sees on a device, or '' when none. */
export const probeFsType = async (device: string, deps: PartitionDeps = {}): Promise<string> => {
  const run = deps.run ?? defaultRun
  const r = await run(commands.blkid, ['-c', '/dev/null', '-o', 'value', '-s', 'TYPE', device], {
    allowFailure: true,
    timeoutMs: BLKID_TIMEOUT_MS,
  })
  if (r.exitCode === 2) return ''
  if (r.exitCode !== 0) throw new CommandError({ command: commands.blkid, args: [device], exitCode: r.exitCode, stderr: r.stderr })
  return r.stdout.trim()
}

export interface RemovableInfo {
  removable: boolean
  usb: boolean
  /** The whole disk the device belongs to (sysfs name). */
  disk: string
}

/**
 * Whether a block device (or the disk holding the partition) is removable
 * or on USB, from sysfs: `<disk>/removable`, and `usb` in the device path.
 */
export const removableInfo = async (device: string, deps: PartitionDeps = {}): Promise<RemovableInfo> => {
  const base = deps.sysClassBlock ?? system.sysClassBlock
  const name = basename(await realpath(device).catch(() => device))
  let sysdir = await realpath(join(base, name))
  const isPartition = await stat(join(sysdir, 'partition')).then(
    () => true,
    () => false,
  )
  if (isPartition) sysdir = dirname(sysdir)
  const removable = (await readFile(join(sysdir, 'removable'), 'utf8').catch(() => '0')).trim() === '1'
  const usb = /\/usb\d*\//.test(sysdir + '/')
  return { removable, usb, disk: basename(sysdir) }
}

/** Refuses (throws) unless `device` may be formatted. */
export const assertFormattable = async (device: string, deps: PartitionDeps = {}): Promise<void> => {
  const info = await removableInfo(device, deps)
  if (info.removable || info.usb) {
    throw new BootAgentError('EFORMAT', `refusing to format ${device}: disk ${info.disk} is ${info.usb ? 'on USB' : 'removable'}`, {
      device,
      ...info,
    })
  }
}

/**
 * mkfs.ext4's arguments (pure): the spec's label when it names one, and the
 * `verity` feature when asked (the cache, on a kernel that has ext4 fs-verity:
 * issue #19). Only then: `verity` is a read-only-compatible feature, so a
 * kernel without it would mount the cache read-only. With it, 4096-byte
 * blocks: before Linux 6.3 ext4 seals files only when the block size is the
 * page size, and mke2fs picks 1024 on a partition under 512 MiB.
 */
export const mkfsArgs = (device: string, spec: PartitionSpec, opts: { verity?: boolean } = {}): string[] => [
  '-q',
  '-F',
  ...(spec.kind === 'label' ? ['-L', spec.value] : []),
  ...(opts.verity ? ['-O', 'verity', '-b', String(VERITY_BLOCK_BYTES)] : []),
  device,
]

/** ext4's block size on a cache with fs-verity: the page size (see {@link mkfsArgs}). */
export const VERITY_BLOCK_BYTES = 4096

/** Whether this kernel's ext4 supports fs-verity (Documentation/ABI/testing/sysfs-fs-ext4: /sys/fs/ext4/features/verity). */
export const kernelHasExt4Verity = async (run: Runner = defaultRun): Promise<boolean> => {
  const has = (): Promise<boolean> => lstat(join(system.sysFsExt4Features, 'verity')).then(() => true, () => false)
  if (await has()) return true
  // ext4 as a module (Debian) shows its features only once loaded: before the first ext4 mount, load it.
  await run(commands.modprobe, ['-q', 'ext4'], { allowFailure: true, timeoutMs: MKFS_TIMEOUT_MS }).catch(() => undefined)
  return has()
}

/** Creates an ext4 filesystem (with the spec's label when it names one; `verity`: see {@link mkfsArgs}). */
export const formatPartition = async (device: string, spec: PartitionSpec, deps: PartitionDeps = {}, opts: { verity?: boolean } = {}): Promise<void> => {
  await assertFormattable(device, deps)
  const run = deps.run ?? defaultRun
  await run(commands.mkfsExt4, mkfsArgs(device, spec, opts), { timeoutMs: MKFS_TIMEOUT_MS })
}

/** Mounts `device` (ext4 or xfs) at `mountpoint`. */
export const mountFs = async (device: string, mountpoint: string, fstype: string, deps: PartitionDeps = {}): Promise<void> => {
  if (!(MOUNTABLE_FSTYPES as readonly string[]).includes(fstype)) {
    throw new BootAgentError('EFSTYPE', `${device} holds ${fstype || 'no filesystem'}; only ${MOUNTABLE_FSTYPES.join(' and ')} are mounted`, {
      device,
      fstype,
    })
  }
  const run = deps.run ?? defaultRun
  await mkdir(mountpoint, { recursive: true, mode: 0o700 })
  await run(commands.mount, ['-t', fstype, '-o', 'noatime', device, mountpoint], { timeoutMs: MOUNT_TIMEOUT_MS })
}

/** Capacity and free space of a mounted filesystem (root may use the reserved blocks). */
export const fsSpace = async (mountpoint: string): Promise<{ capacityBytes: number; freeBytes: number }> => {
  const s = await statfs(mountpoint)
  return { capacityBytes: s.blocks * s.bsize, freeBytes: s.bfree * s.bsize }
}

export interface OpenPartitionOptions extends PartitionDeps {
  /** 'cache' or 'root', for messages. */
  role: string
  mountpoint: string
  deadlineMs: number
  /** `rd.bootagent.format` allows creating a filesystem here. */
  mayFormat: boolean
}

/** A spec resolved to one device, with what identifies the device however it was named. */
export interface ResolvedPartition {
  spec: PartitionSpec
  resolution: Resolution
  /** The device node's real path (a /dev/disk/by-* link followed), when found. */
  realDevice?: string
  /** `major:minor` of the block device, when found: one device, whatever spec or path named it. */
  devnum?: string
}

/** A stat's st_rdev split as glibc's gnu_dev_major/gnu_dev_minor do (<sys/sysmacros.h>), for messages and comparison. */
const devnumOf = (rdev: number): string => {
  const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff)
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00)
  return `${major}:${minor}`
}

/**
 * Resolves one configured spec (waiting for it as {@link resolvePartition})
 * and says which block device it is (realpath, major:minor), touching
 * nothing: so that the cache and the root can be compared before either is
 * mounted, let alone wiped.
 */
export const resolveConfigured = async (spec: PartitionSpec | null, deadlineMs: number, deps: PartitionDeps = {}): Promise<ResolvedPartition | null> => {
  if (spec === null) return null
  const resolution = await resolvePartition(spec, deadlineMs, deps)
  if (resolution.state !== 'found') return { spec, resolution }
  const realDevice = await realpath(resolution.device).catch(() => resolution.device)
  const st = await stat(realDevice).catch(() => undefined)
  return { spec, resolution, realDevice, ...(st?.isBlockDevice() ? { devnum: devnumOf(st.rdev) } : {}) }
}

/**
 * Resolves, (optionally formats) and mounts one configured partition, and
 * says what became of it as data for the plan. Never throws for a partition
 * that is missing or will not mount: that is a fallback, not a crash.
 */
export const openPartition = async (spec: PartitionSpec | null, opts: OpenPartitionOptions): Promise<PartitionState> =>
  openResolved(await resolveConfigured(spec, opts.deadlineMs, opts), opts)

/** Formats (when allowed) and mounts a partition already resolved by {@link resolveConfigured}; as {@link openPartition}. */
export const openResolved = async (resolved: ResolvedPartition | null, opts: OpenPartitionOptions): Promise<PartitionState> => {
  if (resolved === null) return { state: 'unset' }
  const { spec, resolution: res } = resolved
  if (res.state === 'missing') return { state: 'missing', reason: res.reason }
  if (res.state === 'ambiguous') return { state: 'unusable', device: res.devices.join(','), reason: res.reason }
  const device = res.device
  try {
    let fstype = await probeFsType(device, opts)
    let mountErr: unknown
    if (fstype) {
      try {
        await mountFs(device, opts.mountpoint, fstype, opts)
        return { state: 'mounted', device, mountpoint: opts.mountpoint, fstype, ...(await fsSpace(opts.mountpoint)) }
      } catch (e) {
        mountErr = e
      }
    }
    if (!opts.mayFormat) {
      return {
        state: 'unusable',
        device,
        reason: mountErr ? messageOf(mountErr) : `no filesystem on ${device} (rd.bootagent.format does not allow creating one)`,
      }
    }
    opts.log?.warn({ device, role: opts.role, fstype, err: mountErr ? messageOf(mountErr) : undefined }, `formatting ${opts.role} partition`)
    // The cache gets fs-verity where the kernel has it, so its objects can be sealed (issue #19).
    await formatPartition(device, spec, opts, { verity: opts.role === 'cache' && (await kernelHasExt4Verity(opts.run)) })
    fstype = 'ext4'
    await mountFs(device, opts.mountpoint, fstype, opts)
    return { state: 'mounted', device, mountpoint: opts.mountpoint, fstype, ...(await fsSpace(opts.mountpoint)) }
  } catch (e) {
    return { state: 'unusable', device, reason: messageOf(e) }
  }
}
