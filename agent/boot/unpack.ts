/**
 * Turning a verified squashfs image into a root directory (SPEC §7).
 *
 * - {@link measureImage}: the unpacked size from the image's own inode table
 *   (`unsquashfs -lln`), so a root too small is found before anything is wiped.
 *   An image whose inode table cannot be read fails here, before the wipe.
 * - {@link wipeRoot}: removes everything in the root except `lost+found`.
 * - {@link unpackImage}: `unsquashfs -st` into a fresh directory inside the
 *   target (unsquashfs wants a destination that does not exist), with data and
 *   fragment queues of {@link UNPACK_QUEUE_MIB} MiB instead of 256 each, then moves
 *   each entry up (same filesystem: renames). On any failure everything
 *   unpacked is removed: never a half-unpacked root.
 * - {@link findInit}: an init exists, following symlinks inside the root only.
 * - {@link writeMarker}: `/.boot-agent-image` records the digest and time.
 */
import { chmod, chown, lstat, mkdir, readdir, readlink, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises'
import { join, posix } from 'node:path'
import { BootAgentError, messageOf } from '../core/errors.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import { commands } from '../core/system.js'
import { faultPoint } from '../core/fault.js'

const LIST_TIMEOUT_MS = 5 * 60_000
const UNPACK_TIMEOUT_MS = 60 * 60_000
/**
 * unsquashfs's data and fragment queues (`-da`, `-fr`), MiB. Its default, 256
 * each, made it hold 274 MB for a 1 GiB image of large files and 485 MB for
 * /usr/share (63,000 inodes): memory an initramfs (and an rwram root in the
 * same RAM) does not have to spare, and fresh pages every boot. With 32 it
 * holds 38 and 81 MB and unpacks faster here, 1.81 s vs 2.53 s and 2.7 vs
 * 3.5 s (medians, docs/performance.md); 256 blocks in flight still keep every
 * core decompressing.
 */
export const UNPACK_QUEUE_MIB = 32
/** The unsquashfs arguments that set them (the benchmark's hand run uses the same). */
export const UNPACK_QUEUE_ARGS: readonly string[] = ['-da', String(UNPACK_QUEUE_MIB), '-fr', String(UNPACK_QUEUE_MIB)]
/** Where the unpack lands first, inside the target. */
export const UNPACK_DIR = '.boot-agent-unpack'
export const MARKER_FILE = '.boot-agent-image'
/** Inits looked for, in order (dracut's own list: systemd, then sysvinit / busybox). */
export const INIT_CANDIDATES = ['/usr/lib/systemd/systemd', '/lib/systemd/systemd', '/sbin/init', '/init'] as const
const MAX_SYMLINK_HOPS = 40
/** Per-inode and per-directory cost counted when measuring (a conservative ext4 block). */
const BLOCK_BYTES = 4096

export interface ImageMeasure {
  /** Entries in the image (files, directories, links, devices). */
  entries: number
  /** Sum of regular file sizes. */
  fileBytes: number
  /** Space the unpacked tree needs: files rounded up to blocks, one block per directory and symlink. */
  neededBytes: number
}

/**
 * Measures an image from its inode table. Lines look like `ls -ln`:
 * `-rw-r--r-- 0/0  3000000 2026-11-21 13:38 squashfs-root/usr/bin/big`
 * (devices show `major,minor` instead of a size).
 */
export const parseListing = (text: string): ImageMeasure => {
  let entries = 0
  let fileBytes = 0
  let neededBytes = 0
  for (const line of text.split('\n')) {
    const m = /^([-dlcbps])[-rwxsStT]{9}\s+\S+\s+(\d+|\d+,\s*\d+)\s/.exec(line)
    if (!m) continue
    entries++
    if (m[1] === '-') {
      const size = Number(m[2])
      fileBytes += size
      neededBytes += Math.ceil(size / BLOCK_BYTES) * BLOCK_BYTES
    } else if (m[1] === 'd' || m[1] === 'l') {
      neededBytes += BLOCK_BYTES
    }
  }
  return { entries, fileBytes, neededBytes }
}

export const measureImage = async (image: string, run: Runner = defaultRun, signal?: AbortSignal): Promise<ImageMeasure> => {
  const r = await run(commands.unsquashfs, ['-lln', image], { timeoutMs: LIST_TIMEOUT_MS, ...(signal ? { signal } : {}) }).catch((e: unknown) => {
    throw new BootAgentError('EUNPACK', `cannot read the image's inode table: ${messageOf(e)}`, { image }, { cause: e })
  })
  const m = parseListing(r.stdout)
  if (m.entries === 0) throw new BootAgentError('EUNPACK', 'the image lists no files', { image })
  return m
}

/** Removes everything in `dir` except `lost+found` (which fsck needs). */
export const wipeRoot = async (dir: string): Promise<void> => {
  for (const name of await readdir(dir)) {
    if (name === 'lost+found') continue
    await rm(join(dir, name), { recursive: true, force: true })
  }
}

export interface UnpackOptions {
  run?: Runner
  signal?: AbortSignal
  /** unsquashfs processors (`-p`); default: unsquashfs's own (all CPUs). */
  processors?: number
  /** Times a sub-step (`unsquashfs`, `moveUp`) for the boot record; default: just runs it. */
  step?: StepTimer
}

/** Runs `fn` as the named sub-step (the boot stage records how long it took). */
export type StepTimer = <T>(name: string, fn: () => Promise<T>) => Promise<T>
/** A StepTimer that only runs the step. */
export const untimed: StepTimer = (_name, fn) => fn()

/**
 * Unpacks `image` into the (empty but for lost+found) directory `dir`. On
 * failure `dir` is left empty again and the error is thrown.
 */
export const unpackImage = async (image: string, dir: string, opts: UnpackOptions = {}): Promise<void> => {
  const run = opts.run ?? defaultRun
  const step = opts.step ?? untimed
  const tmp = join(dir, UNPACK_DIR)
  await rm(tmp, { recursive: true, force: true })
  try {
    // -st: any error is fatal (a short read must not leave a file half-written and go on).
    const args = ['-st', '-no-progress', '-q', ...UNPACK_QUEUE_ARGS, ...(opts.processors ? ['-p', String(opts.processors)] : []), '-d', tmp, image]
    await step('unsquashfs', () => run(commands.unsquashfs, args, { timeoutMs: UNPACK_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) }))
    faultPoint('unpack.unpacked')
    await step('moveUp', async () => {
      for (const name of await readdir(tmp)) {
        faultPoint('unpack.moved')
        if (name === 'lost+found') {
          await rm(join(tmp, name), { recursive: true, force: true })
          continue
        }
        await rename(join(tmp, name), join(dir, name))
      }
      // The image's root directory carries the mode and owner the new / must have.
      const st = await stat(tmp)
      await chmod(dir, st.mode & 0o7777)
      await chown(dir, st.uid, st.gid)
      await rmdir(tmp)
    })
    faultPoint('unpack.done')
  } catch (e) {
    await wipeRoot(dir).catch(() => undefined)
    throw new BootAgentError('EUNPACK', `unpacking the image failed; the root was emptied: ${messageOf(e)}`, { image, dir }, { cause: e })
  }
}

/**
 * Resolves `path` inside `root` as the booted system would see it, following
 * symlinks with absolute targets re-rooted at `root` and never leaving it.
 * Returns the host path of the final target, or undefined when it does not
 * exist, loops, or escapes.
 */
export const resolveInRoot = async (root: string, path: string): Promise<string | undefined> => {
  let parts = posix.normalize(path).split('/').filter(Boolean)
  const resolved: string[] = []
  let hops = 0
  while (parts.length > 0) {
    const [head, ...rest] = parts
    parts = rest
    if (head === undefined || head === '.') continue
    if (head === '..') {
      resolved.pop() // at the root, .. stays at the root (as the kernel does in a chroot)
      continue
    }
    const host = join(root, ...resolved, head)
    let st
    try {
      st = await lstat(host)
    } catch {
      return undefined
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) return undefined
      const target = await readlink(host)
      if (target.startsWith('/')) resolved.length = 0
      parts = [...target.split('/').filter(Boolean), ...parts]
      continue
    }
    resolved.push(head)
  }
  return join(root, ...resolved)
}

/** The first init found in the root (as the path inside it), or undefined. */
export const findInit = async (root: string): Promise<string | undefined> => {
  for (const cand of INIT_CANDIDATES) {
    const host = await resolveInRoot(root, cand)
    if (!host) continue
    const st = await stat(host).catch(() => undefined)
    if (st?.isFile() && (st.mode & 0o111) !== 0) return cand
  }
  return undefined
}

export interface Marker {
  sha256: string
  name: string
  size: number
  /** ISO time the root was made. */
  unpackedAt: string
  style: string
}

/**
 * Writes the marker into the root. Not fsynced, on purpose: on ext4
 * (data=ordered) an fsync commits the journal only after every dirty data
 * block of the filesystem is written, i.e. it would flush the whole freshly
 * unpacked image and stall the boot for seconds. The root is rebuilt at every
 * disked boot, so a crash that loses the marker (or the root) costs nothing.
 */
export const writeMarker = async (root: string, marker: Marker): Promise<void> => {
  await mkdir(root, { recursive: true })
  await writeFile(join(root, MARKER_FILE), JSON.stringify(marker, null, 2) + '\n', { mode: 0o644 })
}
