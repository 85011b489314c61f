/**
 * The boot plan: pure decisions, no side effects (STYLE: decide first, then act).
 *
 * {@link resolveIntent} merges the command line over the head node's
 * descriptor over the defaults. {@link planBoot} takes that intent and what
 * the partitions turned out to be, and returns the plan as plain data: the
 * style actually booted, where the image is cached, where the root goes, and
 * every fallback with its reason (SPEC §2). Decisions that need facts only
 * known later (the image's unpacked size, a cache that filled up during the
 * download) are further pure steps: {@link planRootFit}, {@link planCacheFull}.
 * The executors in stage.ts carry the plan out and decide nothing.
 */
import type {
  BootCmdline,
  BootStyle,
  CacheFullPolicy,
  FormatPolicy,
  OnFail,
  PartitionSpec,
  RamStyle,
  RootMode,
  VerifyMode,
} from './cmdline.js'
import { DEFAULT_DEVICE_TIMEOUT_MS, DEFAULT_HTTP_TIMEOUT_MS, DEFAULT_REBOOT_DELAY_MS } from './cmdline.js'
import { ConfigError } from '../core/errors.js'
import type { BootDescriptor } from './descriptor.js'

export const DEFAULT_STYLE: BootStyle = 'disked'
export const DEFAULT_VERIFY: VerifyMode = 'fast'
export const DEFAULT_ONFAIL: OnFail = 'emergency'
/** SPEC §2: "a node that can boot should boot". */
export const DEFAULT_CACHE_FULL: CacheFullPolicy = 'ram'
export const DEFAULT_RAM_STYLE: RamStyle = 'rwram'
/**
 * disked's default root mode. overlay: a cache-hit boot's root step took
 * 0.3–0.4 % of unsquashfs's time on a 2 GB OS tree, and a cold full read
 * through it 0.99–1.35× as fast as from the unpacked copy
 * (docs/performance.md, "Root modes").
 */
export const DEFAULT_ROOT_MODE: RootMode = 'overlay'
/**
 * Parallel Range requests a boot opens when neither the command line nor the
 * descriptor says: one, by measurement (docs/performance.md, "Boot streams"):
 * on loopback and a 2-core node the JS thread and the disk are the limit, not
 * one connection, and a second stream only adds read-back of out-of-order bytes.
 */
export const DEFAULT_BOOT_STREAMS = 1
/** Room kept free on the cache beyond the image (metadata, spool, temp names). */
export const CACHE_SLACK_BYTES = 1024 * 1024
/** Room kept free on the root beyond the unpacked image (1 %, at least 1 MiB). */
export const rootSlackBytes = (capacityBytes: number): number => Math.max(1024 * 1024, Math.ceil(capacityBytes / 100))

export type ValueSource = 'cmdline' | 'descriptor' | 'default'

/** What the node was asked to do, before looking at its disks. */
export interface BootIntent {
  node: string
  server: string
  requestedStyle: BootStyle
  styleSource: ValueSource
  image: BootDescriptor['image']
  cacheSpec: PartitionSpec | null
  rootSpec: PartitionSpec | null
  verify: VerifyMode
  onfail: OnFail
  cacheFull: CacheFullPolicy
  ramStyle: RamStyle
  rootMode: RootMode
  format: FormatPolicy
  pubkey?: string
  deviceTimeoutMs: number
  httpTimeoutMs: number
  rebootDelayMs: number
  /** Parallel Range requests for the image: command line, then descriptor, then {@link DEFAULT_BOOT_STREAMS}. */
  streams: number
}

const pick = <T>(cmd: T | undefined, desc: T | undefined, dflt: T): [T, ValueSource] =>
  cmd !== undefined ? [cmd, 'cmdline'] : desc !== undefined ? [desc, 'descriptor'] : [dflt, 'default']

/** Command-line values override the descriptor's, which override the defaults (SPEC §3). */
export const resolveIntent = (cmdline: BootCmdline, descriptor: BootDescriptor, node: string, server: string): BootIntent => {
  const [requestedStyle, styleSource] = pick(cmdline.style, descriptor.style, DEFAULT_STYLE)
  return {
    node,
    server,
    requestedStyle,
    styleSource,
    image: descriptor.image,
    cacheSpec: pick(cmdline.cache, descriptor.partitions.cache, null)[0],
    rootSpec: pick(cmdline.root, descriptor.partitions.root, null)[0],
    verify: pick(cmdline.verify, descriptor.policies.verify, DEFAULT_VERIFY)[0],
    onfail: pick(cmdline.onfail, descriptor.policies.onfail, DEFAULT_ONFAIL)[0],
    cacheFull: pick(cmdline.cacheFull, descriptor.policies.cacheFull, DEFAULT_CACHE_FULL)[0],
    ramStyle: cmdline.ramStyle ?? DEFAULT_RAM_STYLE,
    rootMode: pick(cmdline.rootMode, descriptor.policies.rootMode, DEFAULT_ROOT_MODE)[0],
    format: cmdline.format ?? { cache: false, root: false },
    ...(cmdline.pubkey ? { pubkey: cmdline.pubkey } : {}),
    deviceTimeoutMs: cmdline.deviceTimeoutMs ?? DEFAULT_DEVICE_TIMEOUT_MS,
    httpTimeoutMs: cmdline.httpTimeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS,
    rebootDelayMs: cmdline.rebootDelayMs ?? DEFAULT_REBOOT_DELAY_MS,
    streams: pick(cmdline.streams, descriptor.policies.streams, DEFAULT_BOOT_STREAMS)[0],
  }
}

/** What became of one configured partition. */
export type PartitionState =
  | { state: 'unset' }
  | { state: 'missing'; reason: string }
  | { state: 'unusable'; device: string; reason: string }
  | {
      state: 'mounted'
      device: string
      mountpoint: string
      fstype: string
      /** Size of the filesystem's data area (statfs blocks × bsize). */
      capacityBytes: number
      /** Free now (statfs bavail × bsize). */
      freeBytes: number
    }

export interface Inventory {
  cache: PartitionState
  root: PartitionState
  /** About the cache's contents, when it mounted. */
  cacheContents?: {
    /** The image's object is present (it is re-verified before use all the same). */
    hasImage: boolean
    /** Bytes that eviction could free (objects other than the image and the previous one). */
    evictableBytes: number
  }
}

export type FallbackKind =
  | 'cache-missing'
  | 'cache-unusable'
  | 'cache-full'
  | 'root-missing'
  | 'root-unusable'
  | 'root-too-small'

export interface Fallback {
  kind: FallbackKind
  reason: string
}

export type CachePlan =
  | { mode: 'partition'; spec: string; device: string; mountpoint: string }
  /** Image held in RAM (tmpfs under the run directory) for this boot only. */
  | { mode: 'ram'; spec: string | null; device?: string; mountpoint?: string }

export type RootPlan =
  | { mode: 'partition'; spec: string; device: string; mountpoint: string }
  | { mode: 'tmpfs' }
  | { mode: 'overlay' }

export interface BootPlan {
  node: string
  server: string
  requestedStyle: BootStyle
  style: BootStyle
  image: BootDescriptor['image']
  cache: CachePlan
  root: RootPlan
  /** `rootMode`: how disked makes its root (only disked reads it). */
  policies: { verify: VerifyMode; onfail: OnFail; cacheFull: CacheFullPolicy; ramStyle: RamStyle; rootMode: RootMode }
  fallbacks: Fallback[]
  /**
   * `boot`: go on. `clear-cache-reboot`: the cache is too full for the image
   * and the policy says to clear it and reboot (ClusterWare's behaviour).
   */
  action: 'boot' | 'clear-cache-reboot'
  /** Why the action is not `boot`. */
  actionReason?: string
}

const rootForStyle = (style: BootStyle): RootPlan => (style === 'roram' ? { mode: 'overlay' } : { mode: 'tmpfs' })

const describe = (s: PartitionState, role: string, spec: PartitionSpec | null): string => {
  switch (s.state) {
    case 'unset':
      return `no ${role} partition configured`
    case 'missing':
      return `${role} partition ${spec?.text ?? ''} not found: ${s.reason}`
    case 'unusable':
      return `${role} partition ${spec?.text ?? ''} (${s.device}) cannot be used: ${s.reason}`
    case 'mounted':
      return `${role} partition mounted`
  }
}

/** Decides the boot from the intent and what the partitions turned out to be. */
export const planBoot = (intent: BootIntent, inv: Inventory): BootPlan => {
  const fallbacks: Fallback[] = []
  const wantsRoot = intent.requestedStyle === 'disked'
  let style = intent.requestedStyle
  let action: BootPlan['action'] = 'boot'
  let actionReason: string | undefined

  // The cache: used by every style when it mounts (SPEC §2 table).
  let cache: CachePlan
  if (inv.cache.state === 'mounted') {
    cache = { mode: 'partition', spec: intent.cacheSpec?.text ?? '', device: inv.cache.device, mountpoint: inv.cache.mountpoint }
  } else {
    cache = { mode: 'ram', spec: intent.cacheSpec?.text ?? null }
    // Without a configured cache, a RAM style simply has none; disked expected one.
    if (inv.cache.state !== 'unset' || intent.requestedStyle === 'disked') {
      fallbacks.push({
        kind: inv.cache.state === 'unusable' ? 'cache-unusable' : 'cache-missing',
        reason: `${describe(inv.cache, 'cache', intent.cacheSpec)}; booting without a cache (image held in RAM)`,
      })
    }
  }

  // Cache too small for the image even after eviction → policy (SPEC §2).
  if (inv.cache.state === 'mounted' && cache.mode === 'partition' && inv.cacheContents && !inv.cacheContents.hasImage) {
    const room = inv.cache.freeBytes + inv.cacheContents.evictableBytes
    const needed = intent.image.size + CACHE_SLACK_BYTES
    if (needed > room) {
      const d = decideCacheFull(intent.cacheFull, { needed, available: room, capacityBytes: inv.cache.capacityBytes })
      if (d.action === 'clear-cache-reboot') {
        action = 'clear-cache-reboot'
        actionReason = d.reason
      } else {
        cache = { mode: 'ram', spec: cache.spec, device: cache.device, mountpoint: cache.mountpoint }
      }
      fallbacks.push({ kind: 'cache-full', reason: d.reason })
    }
  }

  // The root: only disked uses a partition.
  let root: RootPlan
  if (!wantsRoot) {
    root = rootForStyle(style)
  } else if (inv.root.state === 'mounted') {
    root = { mode: 'partition', spec: intent.rootSpec?.text ?? '', device: inv.root.device, mountpoint: inv.root.mountpoint }
  } else {
    style = intent.ramStyle
    root = rootForStyle(style)
    fallbacks.push({
      kind: inv.root.state === 'unusable' ? 'root-unusable' : 'root-missing',
      reason: `${describe(inv.root, 'root', intent.rootSpec)}; booting ${style} instead of disked`,
    })
  }

  return {
    node: intent.node,
    server: intent.server,
    requestedStyle: intent.requestedStyle,
    style,
    image: intent.image,
    cache,
    root,
    policies: { verify: intent.verify, onfail: intent.onfail, cacheFull: intent.cacheFull, ramStyle: intent.ramStyle, rootMode: intent.rootMode },
    fallbacks,
    action,
    ...(actionReason ? { actionReason } : {}),
  }
}

/** Where a partition spec was configured, for messages: the kernel argument or the descriptor's field. */
export const partitionKey = (role: 'cache' | 'root', cmdline: Pick<BootCmdline, 'cache' | 'root'>): string =>
  cmdline[role] !== undefined ? `rd.bootagent.${role}` : `partitions.${role} (boot descriptor)`

/** A configured partition as resolved before anything is mounted (partitions.ts resolveConfigured). */
export interface ResolvedDevice {
  /** The spec as written (LABEL=…, UUID=…, /dev/…). */
  spec: string
  /** Where it was configured ({@link partitionKey}). */
  key: string
  /** The device node, links followed. */
  device: string
  /** major:minor, when the device could be stat'ed. */
  devnum?: string
}

/**
 * The root and the cache must be two devices, however each is named (the
 * same label, a LABEL= and a UUID= of one filesystem, a /dev path or a
 * /dev/disk/by-* link): a root that is the cache would be wiped at every
 * disked boot, the cache with it, and with onfail=reboot the node would
 * download and reboot forever. Compared by major:minor (by the real device
 * path when either could not be stat'ed) and refused as a configuration
 * error before either is mounted: produce the machine specified or none.
 */
export const refuseRootOnCache = (cache: ResolvedDevice | undefined, root: ResolvedDevice | undefined): ConfigError | undefined => {
  if (!cache || !root) return undefined
  const same = cache.devnum !== undefined && root.devnum !== undefined ? cache.devnum === root.devnum : cache.device === root.device
  if (!same) return undefined
  const dev = `${root.device}${root.devnum ? ` (${root.devnum})` : ''}`
  return new ConfigError(
    root.key,
    `root partition ${root.spec} and cache partition ${cache.spec} (${cache.key}) are the same device ${dev}; refusing to use the cache as the root, which would wipe it at every boot. Nothing was mounted or changed: give the root a partition of its own`,
    { root: root.spec, cache: cache.spec, device: root.device, ...(root.devnum ? { devnum: root.devnum } : {}) },
  )
}

export interface CacheFullFacts {
  /** Bytes the image needs on the cache. */
  needed: number
  /** Bytes the cache could offer after eviction. */
  available: number
  /** The whole cache filesystem (what clearing it could reach). */
  capacityBytes: number
}

/**
 * The cache-full policy as a decision. `clear-reboot` only when clearing can
 * help: a cache smaller than the image would reboot forever, so then the node
 * boots from RAM and says why.
 */
export const decideCacheFull = (
  policy: CacheFullPolicy,
  f: CacheFullFacts,
): { action: 'ram' | 'clear-cache-reboot'; reason: string } => {
  const what = `cache cannot hold the image (${f.needed} bytes needed, ${f.available} available after eviction)`
  if (policy === 'clear-reboot') {
    if (f.needed <= f.capacityBytes) return { action: 'clear-cache-reboot', reason: `${what}; policy clear-reboot: clearing the cache and rebooting` }
    return {
      action: 'ram',
      reason: `${what}; policy clear-reboot, but the whole cache (${f.capacityBytes} bytes) is smaller than the image, so clearing would reboot in a loop: booting from RAM instead`,
    }
  }
  return { action: 'ram', reason: `${what}; policy ram: booting with the image in RAM` }
}

/** A cache that filled up during the download (CacheFullError): the same policy, decided again. */
export const planCacheFull = (plan: BootPlan, f: CacheFullFacts): BootPlan => {
  if (plan.cache.mode !== 'partition') return plan
  const d = decideCacheFull(plan.policies.cacheFull, f)
  const fallbacks = [...plan.fallbacks, { kind: 'cache-full' as const, reason: d.reason }]
  if (d.action === 'clear-cache-reboot') return { ...plan, fallbacks, action: 'clear-cache-reboot', actionReason: d.reason }
  const c = plan.cache
  return { ...plan, fallbacks, cache: { mode: 'ram', spec: c.spec, device: c.device, mountpoint: c.mountpoint } }
}

export interface RootFitFacts {
  /** Bytes the unpacked image needs (from its own inode table). */
  neededBytes: number
  /** The root filesystem's data area once wiped. */
  capacityBytes: number
}

/**
 * Root too small for the unpacked image → the RAM style, with the reason
 * (checked before wiping). Not asked in overlay mode: there the root
 * partition holds only the boot's changes (see {@link needsUnpackedSize}).
 */
export const planRootFit = (plan: BootPlan, f: RootFitFacts): BootPlan => {
  if (plan.root.mode !== 'partition') return plan
  const limit = f.capacityBytes - rootSlackBytes(f.capacityBytes)
  if (f.neededBytes <= limit) return plan
  const style = plan.policies.ramStyle
  return {
    ...plan,
    style,
    root: rootForStyle(style),
    fallbacks: [
      ...plan.fallbacks,
      {
        kind: 'root-too-small',
        reason: `root partition ${plan.root.spec} (${plan.root.device}) holds ${f.capacityBytes} bytes, the unpacked image needs ${f.neededBytes} (+ ${rootSlackBytes(f.capacityBytes)} kept free); booting ${style} instead of disked, root left untouched`,
      },
    ],
  }
}

/**
 * Whether the stage must measure the unpacked image (`unsquashfs -lln`, the
 * whole inode table: 0.3 s on a 58k-file tree) before making the root: every
 * style that unpacks does; disked in overlay mode only mounts it.
 */
export const needsUnpackedSize = (plan: BootPlan): boolean => !(plan.style === 'disked' && plan.root.mode === 'partition' && plan.policies.rootMode === 'overlay')
