/**
 * The object under a running root is pinned (issue #19): an overlay boot
 * loop-mounts the cached object as its lower layer, so eviction, `cache gc`,
 * removal and repair must neither delete nor rewrite it while it is mounted.
 *
 * How the pin is known: from the kernel, not from a file of ours. Every loop
 * device names its backing file (`/sys/block/loopN/loop/backing_file`, the
 * path as this process sees it); an object is pinned while a loop device is
 * backed by it. A pin file written at boot would outlive the mount (a power
 * cut, a root unmounted by hand) and pin forever, or be missing after a
 * crash between the mount and its write; the kernel's own table is always
 * the truth. (Deleting a mounted object would not even hurt the running root
 * — the loop holds the inode — but would free no space and make the next boot
 * fetch it again; rewriting it in place, as a repair does, would change the
 * bytes under the running kernel's page cache: that is what must never happen.)
 */
import { readdir, readFile, realpath } from 'node:fs/promises'
import { join } from 'node:path'
import { BootAgentError, isErrno } from '../core/errors.js'
import { system } from '../core/system.js'

/** One loop device and the file behind it. */
export interface LoopBacking {
  /** `loop3`. */
  device: string
  /** Absolute path of the backing file (the kernel's " (deleted)" suffix taken off). */
  backingFile: string
  /** The backing file was unlinked since the device was set up. */
  deleted: boolean
}

const DELETED_SUFFIX = ' (deleted)'

/** Parses one `backing_file` attribute (pure). */
export const parseBackingFile = (device: string, text: string): LoopBacking | undefined => {
  const line = text.replace(/\n$/, '')
  if (!line.startsWith('/')) return undefined
  const deleted = line.endsWith(DELETED_SUFFIX)
  return { device, backingFile: deleted ? line.slice(0, -DELETED_SUFFIX.length) : line, deleted }
}

/** Every bound loop device with its backing file (`sysBlock`: /sys/block). */
export const readLoopBackings = async (sysBlock: string = system.sysBlock): Promise<LoopBacking[]> => {
  let devices: string[]
  try {
    devices = (await readdir(sysBlock)).filter((d) => /^loop\d+$/.test(d))
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return []
    throw e
  }
  const out: LoopBacking[] = []
  for (const d of devices) {
    try {
      const b = parseBackingFile(d, await readFile(join(sysBlock, d, 'loop', 'backing_file'), 'utf8'))
      if (b) out.push(b)
    } catch (e) {
      // An unbound loop device has no loop/ directory: not a backing. A device
      // detached while its attribute is read answers ENODEV (measured: 47 of
      // ~78,000 reads during 300 attach/detach cycles), a vanished one ENXIO:
      // not a backing either. Throwing here failed a whole eviction because
      // some other program freed a loop device at that moment.
      if (!isErrno(e, 'ENOENT', 'ENODEV', 'ENXIO')) throw e
    }
  }
  return out
}

/** The loop devices backed by the file at `realPath` (pure; a deleted backing file is another inode). */
export const loopsBacking = (loops: readonly LoopBacking[], realPath: string): LoopBacking[] =>
  loops.filter((l) => !l.deleted && l.backingFile === realPath)

/** The loop devices backed by the object file at `path` (none when it does not exist). */
export const objectMounts = async (path: string, loops?: readonly LoopBacking[]): Promise<LoopBacking[]> => {
  let real: string
  try {
    real = await realpath(path)
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENOTDIR')) return []
    throw e
  }
  return loopsBacking(loops ?? (await readLoopBackings()), real)
}

/** Why an object is pinned, for messages. */
export const pinReason = (mounts: readonly LoopBacking[]): string =>
  `it is mounted under a running root (loop device ${mounts.map((m) => `/dev/${m.device}`).join(', ')} is backed by it)`

/** Throws EPINNED when the object at `path` is mounted; `action` says what was refused ("removed", "repaired"). */
export const refuseIfMounted = async (path: string, sha256: string, action: string): Promise<void> => {
  const mounts = await objectMounts(path)
  if (mounts.length === 0) return
  throw new BootAgentError('EPINNED', `cache object ${sha256} is not ${action}: ${pinReason(mounts)}; it can go once that root is gone (after a reboot)`, {
    sha256,
    path,
    loops: mounts.map((m) => `/dev/${m.device}`).join(','),
  })
}

/** Of `objects`, those mounted now, with their loop devices (read once for all). */
export const mountedObjects = async (objects: readonly { sha256: string; path: string }[]): Promise<Map<string, LoopBacking[]>> => {
  const loops = await readLoopBackings()
  const out = new Map<string, LoopBacking[]>()
  if (loops.length === 0) return out
  for (const o of objects) {
    const m = await objectMounts(o.path, loops)
    if (m.length) out.set(o.sha256, m)
  }
  return out
}
