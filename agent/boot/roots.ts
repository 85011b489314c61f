/**
 * The three boot styles as executors (SPEC §2, §7). Each takes a verified
 * image and a decided plan and leaves a bootable tree mounted at the sysroot,
 * or throws having undone its own mounts and emptied what it unpacked.
 *
 * - `disked`, root mode `unpack`: wipe the root partition (keeping
 *   lost+found), unpack into it, check an init, write the marker, bind-mount
 *   it at the sysroot.
 * - `disked`, root mode `overlay` (overlay.ts): loop-mount the image
 *   read-only, check an init, trash the previous boot's layers, overlay a
 *   fresh upper directory on the root partition at the sysroot.
 * - `rwram`: the same into a fresh tmpfs.
 * - `roram`: loop-mount the image read-only, put a tmpfs overlay on top.
 *
 * The work mounts live under `${runDir}/mnt`; in the initramfs /run is
 * carried into the real root, so the roram lower and upper stay reachable.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { BootAgentError, messageOf } from '../core/errors.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import type { Logger } from '../core/log.js'
import { commands } from '../core/system.js'
import type { BootPlan } from './plan.js'
import { mountOverlayRoot, type OverlayRoot } from './overlay.js'
import { findInit, type StepTimer, unpackImage, untimed, wipeRoot, writeMarker } from './unpack.js'

const MOUNT_TIMEOUT_MS = 60_000

export interface RootDeps {
  run?: Runner
  signal?: AbortSignal
  log?: Logger
  /** The run directory (work mounts go under `mnt/`). */
  runDir: string
  /** Where the new root must end up mounted. */
  sysroot: string
  now?: () => Date
  /** Times sub-steps (wipe, unsquashfs, moveUp, check, bind; loop, trash, overlay) for the boot record. */
  step?: StepTimer
  /** Names this boot's overlay layers (overlay.ts newLayerId by default). */
  layerId?: string
}

export interface RootResult {
  /** The init found, as a path inside the new root. */
  init: string
  /** Mount points made for this root that stay (innermost last). */
  mounts: string[]
  /** disked in overlay mode: where its layers are. */
  overlay?: OverlayRoot
}

const mount = (run: Runner, args: string[]): Promise<unknown> => run(commands.mount, args, { timeoutMs: MOUNT_TIMEOUT_MS })

/** Unmounts, ignoring "not mounted"; lazily when busy, so a failed boot never leaves a mount behind. */
export const unmount = async (run: Runner, target: string): Promise<void> => {
  const r = await run(commands.umount, [target], { allowFailure: true, timeoutMs: MOUNT_TIMEOUT_MS })
  if (r.exitCode === 0 || /not mounted|no mount point/i.test(r.stderr)) return
  await run(commands.umount, ['-l', target], { allowFailure: true, timeoutMs: MOUNT_TIMEOUT_MS })
}

const noInit = (where: string): BootAgentError =>
  new BootAgentError('ENOINIT', `the image has no init (looked for /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init, /init) in ${where}`, { where })

const marker = (plan: BootPlan, now: Date) => ({
  sha256: plan.image.sha256,
  name: plan.image.name,
  size: plan.image.size,
  unpackedAt: now.toISOString(),
  style: plan.style,
})

/** Unpacks into `dir` (already empty), checks the init and writes the marker; empties `dir` on failure. */
const fillTree = async (plan: BootPlan, image: string, dir: string, deps: RootDeps): Promise<string> => {
  const step = deps.step ?? untimed
  await unpackImage(image, dir, { step, ...(deps.run ? { run: deps.run } : {}), ...(deps.signal ? { signal: deps.signal } : {}) })
  try {
    return await step('check', async () => {
      const init = await findInit(dir)
      if (!init) throw noInit(plan.image.name)
      await writeMarker(dir, marker(plan, deps.now?.() ?? new Date()))
      return init
    })
  } catch (e) {
    await wipeRoot(dir).catch(() => undefined)
    throw e
  }
}

export const prepareDisked = async (plan: BootPlan, image: string, deps: RootDeps): Promise<RootResult> => {
  if (plan.root.mode !== 'partition') throw new BootAgentError('EPLAN', 'disked needs a root partition in the plan')
  if (plan.policies.rootMode === 'overlay') return prepareDiskedOverlay(plan, plan.root.mountpoint, image, deps)
  const run = deps.run ?? defaultRun
  const step = deps.step ?? untimed
  const dir = plan.root.mountpoint
  await step('wipe', () => wipeRoot(dir))
  const init = await fillTree(plan, image, dir, deps)
  await step('bind', async () => {
    await mkdir(deps.sysroot, { recursive: true })
    try {
      await mount(run, ['--bind', dir, deps.sysroot])
    } catch (e) {
      await wipeRoot(dir).catch(() => undefined)
      throw e
    }
    await unmount(run, dir)
  })
  return { init, mounts: [deps.sysroot] }
}

/** disked, root mode overlay: the root partition (mounted at `rootDir`) keeps only this boot's changes. */
const prepareDiskedOverlay = async (plan: BootPlan, rootDir: string, image: string, deps: RootDeps): Promise<RootResult> => {
  const run = deps.run ?? defaultRun
  let init = ''
  const overlay = await mountOverlayRoot(image, rootDir, join(deps.runDir, 'mnt', 'overlay-lower'), deps.sysroot, {
    run,
    unmount: (target) => unmount(run, target),
    ...(deps.log ? { log: deps.log } : {}),
    ...(deps.step ? { step: deps.step } : {}),
    ...(deps.layerId ? { layerId: deps.layerId } : {}),
    checkLower: async (lower) => {
      const found = await findInit(lower)
      if (!found) throw noInit(plan.image.name)
      init = found
    },
  })
  try {
    await writeMarker(deps.sysroot, marker(plan, deps.now?.() ?? new Date()))
  } catch (e) {
    for (const m of [deps.sysroot, overlay.lower]) await unmount(run, m).catch(() => undefined)
    throw e
  }
  return { init, mounts: [overlay.lower, deps.sysroot], overlay }
}

export const prepareRwram = async (plan: BootPlan, image: string, deps: RootDeps): Promise<RootResult> => {
  const run = deps.run ?? defaultRun
  const work = join(deps.runDir, 'mnt', 'ram-root')
  await mkdir(work, { recursive: true })
  await mount(run, ['-t', 'tmpfs', '-o', 'mode=0755', 'boot-agent-rwram', work])
  try {
    const init = await fillTree(plan, image, work, deps)
    await mkdir(deps.sysroot, { recursive: true })
    await mount(run, ['--bind', work, deps.sysroot])
    await unmount(run, work)
    return { init, mounts: [deps.sysroot] }
  } catch (e) {
    await unmount(run, work)
    throw e
  }
}

export const prepareRoram = async (plan: BootPlan, image: string, deps: RootDeps): Promise<RootResult> => {
  const run = deps.run ?? defaultRun
  const lower = join(deps.runDir, 'mnt', 'roram-lower')
  const rw = join(deps.runDir, 'mnt', 'roram-rw')
  const made: string[] = []
  try {
    await mkdir(lower, { recursive: true })
    await mount(run, ['-t', 'squashfs', '-o', 'ro,loop', image, lower])
    made.push(lower)
    const init = await findInit(lower)
    if (!init) throw noInit(plan.image.name)
    await mkdir(rw, { recursive: true })
    await mount(run, ['-t', 'tmpfs', '-o', 'mode=0755', 'boot-agent-roram', rw])
    made.push(rw)
    await mkdir(join(rw, 'upper'), { mode: 0o755 })
    await mkdir(join(rw, 'work'), { mode: 0o700 })
    await mkdir(deps.sysroot, { recursive: true })
    await mount(run, [
      '-t',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${join(rw, 'upper')},workdir=${join(rw, 'work')}`,
      'boot-agent-roram',
      deps.sysroot,
    ])
    made.push(deps.sysroot)
    await writeMarker(deps.sysroot, marker(plan, deps.now?.() ?? new Date()))
    return { init, mounts: made }
  } catch (e) {
    for (const m of made.reverse()) await unmount(run, m).catch(() => undefined)
    deps.log?.error({ err: messageOf(e) }, 'roram root failed; its mounts were undone')
    throw e
  }
}

/** Carries out the plan's style. */
export const prepareRoot = (plan: BootPlan, image: string, deps: RootDeps): Promise<RootResult> => {
  switch (plan.style) {
    case 'disked':
      return prepareDisked(plan, image, deps)
    case 'rwram':
      return prepareRwram(plan, image, deps)
    case 'roram':
      return prepareRoram(plan, image, deps)
  }
}
