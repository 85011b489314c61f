/**
 * disked in overlay mode (`rd.bootagent.rootmode=overlay`, issue #19): the
 * verified cache object is loop-mounted read-only as the lower layer, the
 * boot's upper and work directories are made fresh on the root partition,
 * and the overlay is mounted where the real root goes.
 *
 * On the root partition everything of ours lives under `.boot-agent/`:
 *
 *     ROOT/.boot-agent/upper-<layerId>   this boot's changes (the overlay's upperdir)
 *     ROOT/.boot-agent/work-<layerId>    overlayfs's workdir (same filesystem, as it must be)
 *     ROOT/.boot-agent/trash/            what earlier boots left, waiting for the daemon
 *
 * Discarding the previous boot is O(1): its upper and work directories (and
 * a tree an `unpack` boot left at the top) are *renamed* into the trash
 * before the new layers are made; the daemon deletes the trash after boot at
 * idle I/O priority (agent/daemon/trash.ts). A rename is atomic, so a crash
 * at any point leaves each old layer either where it was (trashed by the next
 * boot) or in the trash (deleted by the next daemon), and never inside the
 * new root: the overlay shows only its own, empty, upper directory.
 *
 * The root partition stays mounted at the stage's work mount (overlayfs
 * holds it; in the initramfs /run is carried into the real root), and so does
 * the cache partition holding the lower layer's object.
 */
import { chmod, chown, lstat, mkdir, readdir, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { BootAgentError, isErrno, messageOf } from '../core/errors.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import type { Logger } from '../core/log.js'
import { commands } from '../core/system.js'
import type { StepTimer } from './unpack.js'
import { untimed } from './unpack.js'

const MOUNT_TIMEOUT_MS = 60_000
/** Our directory at the top of the root partition. */
export const LAYERS_DIR = '.boot-agent'
export const TRASH_DIR = 'trash'
const UPPER_PREFIX = 'upper-'
const WORK_PREFIX = 'work-'
/** Entries at the top of the root partition an overlay boot keeps in place. */
const KEPT_AT_TOP = new Set(['lost+found', LAYERS_DIR])

/** Where this boot's layers and the trash are, on a root partition mounted at `rootDir`. */
export interface LayerPaths {
  layers: string
  upper: string
  work: string
  trash: string
}

/**
 * A fresh, sortable, unique name for one boot's layers: UTC time to the
 * second and 8 random hex digits (two boots in one second differ; the
 * kernel's boot id would not, for stage runs in one kernel as in the tests).
 */
export const newLayerId = (now: Date = new Date()): string =>
  `${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(4).toString('hex')}`

export const layerPaths = (rootDir: string, layerId: string): LayerPaths => {
  const layers = join(rootDir, LAYERS_DIR)
  return { layers, upper: join(layers, UPPER_PREFIX + layerId), work: join(layers, WORK_PREFIX + layerId), trash: join(layers, TRASH_DIR) }
}

/** One rename into the trash: `from` (a name in `dir`) → `to` (a name in the trash). */
export interface TrashMove {
  dir: 'layers' | 'top'
  from: string
  to: string
}

/**
 * What goes to the trash before a boot, from the names found (pure): every
 * upper-* and work-* in `.boot-agent/` but this boot's, and every entry at the
 * top of the partition but lost+found and `.boot-agent/` (a tree an unpack
 * boot left), gathered under one `tree-<layerId>` directory.
 */
export const planTrash = (layerNames: readonly string[], topNames: readonly string[], layerId: string): { moves: TrashMove[]; treeDir?: string } => {
  const moves: TrashMove[] = []
  const mine = new Set([UPPER_PREFIX + layerId, WORK_PREFIX + layerId])
  for (const n of [...layerNames].sort()) {
    if (mine.has(n)) continue
    if (n.startsWith(UPPER_PREFIX) || n.startsWith(WORK_PREFIX)) moves.push({ dir: 'layers', from: n, to: n })
  }
  const strays = [...topNames].filter((n) => !KEPT_AT_TOP.has(n)).sort()
  if (strays.length === 0) return { moves }
  const treeDir = `tree-${layerId}`
  for (const n of strays) moves.push({ dir: 'top', from: n, to: join(treeDir, n) })
  return { moves, treeDir }
}

const names = async (dir: string): Promise<string[]> => {
  try {
    return await readdir(dir)
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return []
    throw e
  }
}

/**
 * Makes `path` a real directory: a symbolic link or a file found there (junk
 * on the partition, or planted) is unlinked, never followed — renaming old
 * layers through a link would move them out of the partition's trash, where
 * the daemon, which refuses a linked trash, could never delete them.
 */
const ensureRealDir = async (path: string, log?: Logger): Promise<void> => {
  const st = await lstat(path).catch((e: unknown) => (isErrno(e, 'ENOENT') ? undefined : Promise.reject(e)))
  if (st && !st.isDirectory()) {
    log?.warn({ path, kind: st.isSymbolicLink() ? 'symlink' : 'file' }, `${path} is not a directory (${st.isSymbolicLink() ? 'a symbolic link' : 'a file'}): removed, a fresh directory made`)
    await unlink(path)
  }
  if (!st?.isDirectory()) await mkdir(path, { mode: 0o700 })
}

/**
 * Renames what earlier boots left into the trash (see {@link planTrash}).
 * Returns the moves made. Throws EOVERLAY when a rename fails: the boot
 * must not go on with an old layer where the new one goes.
 */
export const trashOldLayers = async (rootDir: string, layerId: string, log?: Logger): Promise<TrashMove[]> => {
  const p = layerPaths(rootDir, layerId)
  await ensureRealDir(p.layers, log)
  await ensureRealDir(p.trash, log)
  const plan = planTrash(await names(p.layers), await names(rootDir), layerId)
  if (plan.treeDir) await mkdir(join(p.trash, plan.treeDir), { mode: 0o700 })
  for (const m of plan.moves) {
    const from = join(m.dir === 'layers' ? p.layers : rootDir, m.from)
    try {
      await rename(from, join(p.trash, m.to))
    } catch (e) {
      throw new BootAgentError('EOVERLAY', `cannot move ${from} into the trash ${p.trash}: ${messageOf(e)}`, { from, trash: p.trash }, { cause: e })
    }
  }
  if (plan.moves.length) log?.info({ moved: plan.moves.length, trash: p.trash }, 'previous boot\'s layers renamed into the trash (the daemon deletes them)')
  return plan.moves
}

export interface OverlayDeps {
  run?: Runner
  log?: Logger
  step?: StepTimer
  /** Names this boot's layers (default {@link newLayerId}). */
  layerId?: string
}

export interface OverlayRoot {
  /** Where the object is loop-mounted (the overlay's lowerdir). */
  lower: string
  upper: string
  work: string
  trash: string
  layerId: string
  /** Renames into the trash this boot made. */
  trashed: number
}

const mount = (run: Runner, args: string[]): Promise<unknown> => run(commands.mount, args, { timeoutMs: MOUNT_TIMEOUT_MS })

/**
 * Mounts `image` (a verified squashfs) at `lower` read-only through a loop
 * device, trashes the previous boot's layers on the root partition mounted
 * at `rootDir`, makes this boot's upper and work directories, and mounts the
 * overlay at `target`. `checkLower` runs on the mounted image before anything
 * on the root partition changes (the init check). On failure every mount it
 * made is undone (renames into the trash stay: they only finish earlier work).
 */
export const mountOverlayRoot = async (
  image: string,
  rootDir: string,
  lower: string,
  target: string,
  deps: OverlayDeps & { checkLower?: (lower: string) => Promise<void>; unmount: (target: string) => Promise<void> },
): Promise<OverlayRoot> => {
  const run = deps.run ?? defaultRun
  const step = deps.step ?? untimed
  const layerId = deps.layerId ?? newLayerId()
  const p = layerPaths(rootDir, layerId)
  const made: string[] = []
  try {
    await step('loop', async () => {
      await mkdir(lower, { recursive: true })
      // -o ro,loop: mount sets the loop device up read-only (losetup -r) with autoclear, so the unmount frees it.
      await mount(run, ['-t', 'squashfs', '-o', 'ro,loop', image, lower])
      made.push(lower)
    })
    await step('check', async () => deps.checkLower?.(lower))
    const moves = await step('trash', () => trashOldLayers(rootDir, layerId, deps.log))
    await step('overlay', async () => {
      // The merged root directory takes its mode and owner from the upper directory.
      const top = await stat(lower)
      await mkdir(p.upper, { mode: 0o755 })
      await chmod(p.upper, top.mode & 0o7777)
      await chown(p.upper, top.uid, top.gid)
      await mkdir(p.work, { mode: 0o700 })
      await mkdir(target, { recursive: true })
      await mount(run, ['-t', 'overlay', '-o', `lowerdir=${lower},upperdir=${p.upper},workdir=${p.work}`, 'boot-agent-root', target])
      made.push(target)
    })
    return { lower, upper: p.upper, work: p.work, trash: p.trash, layerId, trashed: moves.length }
  } catch (e) {
    for (const m of made.reverse()) await deps.unmount(m).catch(() => undefined)
    deps.log?.error({ err: messageOf(e) }, 'overlay root failed; its mounts were undone')
    if (e instanceof BootAgentError && (e.code === 'EOVERLAY' || e.code === 'ENOINIT' || e.code === 'EABORT')) throw e
    throw new BootAgentError('EOVERLAY', `mounting the image as the root under an overlay failed: ${messageOf(e)}`, { image, rootDir, target }, { cause: e })
  }
}
