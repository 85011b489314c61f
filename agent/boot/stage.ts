/**
 * The boot stage, start to end (SPEC §2, §3, §7): command line → node id →
 * descriptor → partitions → plan → verified image → root → record + events.
 *
 * The decisions are made by plan.ts; this file only carries them out, in
 * order, timing each step. Any error after the command line is parsed is a
 * failed boot: the record and a `boot-failed` event say why, work mounts are
 * undone, the root is never left half-unpacked, and `onfail` is followed.
 *
 * Over 400 lines: the stage is one sequence of steps sharing the state the
 * record is made of (plan, inventory, fetched image, overlay, reads); each
 * decision it carries out lives elsewhere (plan.ts, roots.ts, handoff.ts).
 */
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { BootAgentError, CacheFullError, ConfigError, IntegrityError } from '../core/errors.js'
import { makeEvent, type AgentEvent } from '../protocol/event.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import { logOp, type Logger } from '../core/log.js'
import type { Manifest } from '../manifest/types.js'
import type { FastDigest } from '../cache/store.js'
import type { BootCmdline } from './cmdline.js'
import { headBearer, type HeadBearer } from '../core/head-token.js'
import { readNodeToken } from './node-token.js'
import { fetchDescriptor, resolveNodeId, UNKNOWN_NODE, type BootDescriptor, type NodeIdSources } from './descriptor.js'
import { actOnFailure, bootEvents, type BootRecord, deliverBootEvents, errorSummary, EXIT_CODES, spoolEvents, writeBootRecord } from './handoff.js'
import { openResolved, resolveConfigured, type ResolvedPartition } from './partitions.js'
import { type BootPlan, type Inventory, needsUnpackedSize, partitionKey, planBoot, planCacheFull, planRootFit, refuseRootOnCache, resolveIntent, type BootIntent, type ResolvedDevice } from './plan.js'
import { prepareRoot, type RootResult, unmount } from './roots.js'
import { measureImage } from './unpack.js'
import { startReadCounter, verificationName, type ReadCounter } from './device-reads.js'
import { seededRandom } from '../transport/mirrors.js'
import { makeDir } from '../core/make-dir.js'

/** What the stage needs from the cache and the transport (agent/cache, agent/transport). */
export interface FetchedImage {
  path: string
  sha256: string
  size: number
  hit: boolean
  /**
   * What the bytes were checked against (docs/cache.md): `manifest-xxh64`,
   * `manifest-sha256` (a hit), `download` (fetched, every chunk against the manifest).
   */
  verifiedBy?: string
  bytesDownloaded: number
  /** Bytes taken from older cached versions (delta reuse); absent from fetchers that do not reuse. */
  bytesReused?: number
  chunksRepaired: number
  /** What sealing the object with fs-verity did (cache/seal.ts), and why a sealed one was read rather than measured. */
  sealed?: string
  readBecause?: string
  /**
   * A hit's use being recorded in the cache (metadata rewritten, lock
   * released) while the stage goes on; awaited before the record is written.
   */
  recorded?: Promise<void>
}

export interface ImagePipeline<C = unknown> {
  /**
   * Called when the stage starts: begin any slow set-up a cache hit will need
   * (never throws). `verify` is the command line's re-verification mode, the
   * descriptor not being known yet (the default, fast, when the line has none).
   */
  warmUp?(verify: 'fast' | 'strong'): void
  /** Called once the image is fetched: end what only the fetch needed (idle hashing threads). */
  release?(): Promise<void>
  openCache(dir: string, log: Logger): Promise<C>
  /** Whether the object is present, and how much eviction could free keeping `pin`. */
  contents(cache: C, sha256: string): Promise<{ hasImage: boolean; evictableBytes: number; previous?: string }>
  /**
   * Starts reading the fast digest of the object `sha256` (when a regular
   * file is there) so that it overlaps the cache listing and the manifest
   * request; the result is handed to fetchImage. Stopped through `signal`
   * when it is not used.
   */
  startFastDigest?(cache: C, sha256: string, signal: AbortSignal): Promise<{ digest: Promise<FastDigest> } | undefined>
  /** Removes every object (cachefull=clear-reboot). */
  clear(cache: C): Promise<void>
  /**
   * The manifest at `url`, validated once (parseManifest): its schema, its
   * signature with `publicKey`, and that it describes the `pinned` image
   * (IntegrityError / SizeError otherwise).
   */
  fetchManifest(url: string, opts: { publicKey?: string; signal?: AbortSignal; log: Logger; timeoutMs: number; pinned: { sha256: string; size: number; by: string }; node: string; bearer?: HeadBearer }): Promise<Manifest>
  /**
   * `node` seeds the mirror order and the retry jitter (never the host name:
   * nodes booting from one initramfs share it); `mirrors` (the descriptor's,
   * in order) come before the manifest's `urls`; `streams` parallel Range requests.
   */
  fetchImage(opts: { manifest: Manifest; cache: C; log: Logger; signal?: AbortSignal; pin: string[]; verify: 'fast' | 'strong'; digest?: Promise<FastDigest>; node: string; streams: number; mirrors?: string[]; bearer?: HeadBearer }): Promise<FetchedImage>
}

export interface StageOptions {
  cmdline: BootCmdline
  /** Run directory: record, RAM cache, work mounts (default /run/boot-agent). */
  runDir: string
  /** Where the new root is mounted (default /sysroot). */
  sysroot: string
  /** Where the cache partition is mounted (default `${runDir}/cache`). */
  cacheMount?: string
  /** The cache and transport (the cache type is the pipeline's own; methods are bivariant). */
  pipeline: ImagePipeline<unknown>
  log: Logger
  signal?: AbortSignal
  run?: Runner
  nodeIdSources?: Omit<NodeIdSources, 'fromCmdline'>
  /** Waits (reboot delay); injectable for tests. */
  sleep?: (ms: number) => Promise<void>
  sysClassBlock?: string
  now?: () => Date
  /** Whether a failed boot may run the reboot command (default true; see OnFailDeps.mayReboot). */
  mayReboot?: boolean
  /** How long to wait for the head node to take the boot events (default BOOT_DELIVERY_DEADLINE_MS). */
  deliveryDeadlineMs?: number
  /** Process start-up before the stage began (recorded as `timings.startup`). */
  startupMs?: number
  /**
   * This node's token file for the head (docs/security.md); read when present,
   * refused when not root-only. `boot-agent boot` passes system.tokenFile.
   */
  tokenFile?: string
}

export interface StageOutcome {
  record: BootRecord
  recordPath: string
  exitCode: number
  /** The plan as finally carried out (undefined when the stage failed before planning). */
  plan?: BootPlan
}

class Timer {
  readonly timings: Record<string, number> = {}
  private readonly t0 = performance.now()
  async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const s = performance.now()
    try {
      return await fn()
    } finally {
      this.timings[name] = Math.round(performance.now() - s)
    }
  }
  total(): void {
    this.timings.total = Math.round(performance.now() - this.t0)
  }
}

/** Runs the boot stage. Never throws for a failed boot: the outcome says what happened. */
export const runBootStage = async (opts: StageOptions): Promise<StageOutcome> => {
  const { log, pipeline } = opts
  const run = opts.run ?? defaultRun
  const timer = new Timer()
  if (opts.startupMs !== undefined) timer.timings.startup = opts.startupMs
  const cacheMount = opts.cacheMount ?? join(opts.runDir, 'cache')
  const rootMount = join(opts.runDir, 'mnt', 'root')
  const extraEvents: AgentEvent[] = []
  let node = opts.cmdline.node ?? UNKNOWN_NODE
  let server = opts.cmdline.server ?? ''
  // Never in the record, an event or a log line: only in Authorization headers to the head's origin.
  let token: string | undefined
  let intent: BootIntent | undefined
  let plan: BootPlan | undefined
  let inv: Inventory | undefined
  let fetched: FetchedImage | undefined
  let init: string | undefined
  let overlay: RootResult['overlay']
  let rootMounted = false
  // The cached object's fast digest, read while the cache is listed and the manifest fetched.
  let early: { digest: Promise<FastDigest>; stop: AbortController } | undefined
  // Bytes read from the cache device while the image is checked (and fetched): few for a measured hit.
  let reads: ReadCounter | undefined
  let bytesReadVerifying: number | undefined

  const record = (result: 'ok' | 'failed', extra: Partial<BootRecord> = {}): BootRecord => {
    const cacheOnDisk = plan?.cache.mode === 'partition'
    const spoolDir = inv?.cache.state === 'mounted' ? join(cacheMount, 'spool') : join(opts.runDir, 'spool')
    timer.total()
    return {
      schema: 1,
      node,
      server,
      style: plan?.style ?? null,
      requestedStyle: plan?.requestedStyle ?? intent?.requestedStyle ?? null,
      fallbacks: plan?.fallbacks ?? [],
      image: intent ? { name: intent.image.name, sha256: intent.image.sha256, size: intent.image.size } : null,
      cache: {
        spec: intent?.cacheSpec?.text ?? null,
        ...(inv?.cache.state === 'mounted' ? { device: inv.cache.device, mountpoint: inv.cache.mountpoint } : {}),
        hit: fetched?.hit ?? false,
        ...(fetched?.verifiedBy ? { verifiedBy: fetched.verifiedBy, verification: verificationName(fetched.hit, fetched.verifiedBy) } : {}),
        ...(bytesReadVerifying !== undefined ? { bytesReadVerifying } : {}),
        ...(fetched?.sealed ? { sealed: fetched.sealed } : {}),
        ...(fetched?.readBecause ? { readBecause: fetched.readBecause } : {}),
        ...(fetched?.chunksRepaired ? { chunksRepaired: fetched.chunksRepaired } : {}),
        ...(fetched?.path ? { objectPath: fetched.path } : {}),
        inRam: plan ? !cacheOnDisk : false,
      },
      root: {
        spec: intent?.rootSpec?.text ?? null,
        ...(plan?.root.mode === 'partition' ? { device: plan.root.device, mode: plan.policies.rootMode } : {}),
        ...(result === 'ok' ? { sysroot: opts.sysroot } : {}),
        ...(init ? { init } : {}),
        ...(overlay ? { mountpoint: rootMount, lower: overlay.lower, upper: overlay.upper, trash: overlay.trash, trashed: overlay.trashed } : {}),
      },
      bytesFetched: fetched?.bytesDownloaded ?? 0,
      bytesReused: fetched?.bytesReused ?? 0,
      timings: timer.timings,
      result,
      spoolDir,
      time: (opts.now?.() ?? new Date()).toISOString(),
      ...extra,
    }
  }

  const finish = async (rec: BootRecord): Promise<{ recordPath: string }> => {
    // Independent files (the spool on the cache partition or in the run dir, the record in the run dir): written at once.
    const [, recordPath] = await Promise.all([spoolEvents(rec.spoolDir, bootEvents(rec, extraEvents, opts.now?.()), log), writeBootRecord(opts.runDir, rec)])
    // Tell the head now (bounded); a failed node may never start the daemon that would.
    await deliverBootEvents(rec.spoolDir, server, node, { log, ...(opts.deliveryDeadlineMs !== undefined ? { deadlineMs: opts.deliveryDeadlineMs } : {}), ...(token ? { token } : {}) })
    return { recordPath }
  }

  try {
    await makeDir(opts.runDir, 0o755)
    if (!opts.cmdline.server) throw new ConfigError('rd.bootagent.server', 'is required (the head node URL, e.g. http://10.0.0.1:8080)')
    server = opts.cmdline.server
    if (opts.tokenFile) token = await readNodeToken(opts.tokenFile, opts.runDir)
    const bearer = headBearer(server, token)
    pipeline.warmUp?.(opts.cmdline.verify ?? 'fast')
    node = (await timer.step('node', () => resolveNodeId({ ...opts.nodeIdSources, ...(opts.cmdline.node ? { fromCmdline: opts.cmdline.node } : {}) }))).node
    const httpTimeoutMs = intentTimeout(opts.cmdline)
    const descriptor: BootDescriptor = await timer.step('descriptor', () =>
      logOp(log, 'descriptor', { server, node }, () => fetchDescriptor(server, node, { timeoutMs: httpTimeoutMs, log, random: seededRandom(`${node}:descriptor`), ...(opts.signal ? { signal: opts.signal } : {}), ...(token ? { token } : {}) })),
    )
    intent = resolveIntent(opts.cmdline, descriptor, node, server)
    const it = intent

    // Partitions: the cache for every style, the root only for disked.
    const partDeps = { run, log, ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.sysClassBlock ? { sysClassBlock: opts.sysClassBlock } : {}) }
    const [cacheState, rootState] = await timer.step('partitions', async () => {
      // Both resolved first, compared, and only then mounted: a root that is the cache is refused untouched.
      const [cacheDev, rootDev] = await Promise.all([
        resolveConfigured(it.cacheSpec, it.deviceTimeoutMs, partDeps),
        it.requestedStyle === 'disked' ? resolveConfigured(it.rootSpec, it.deviceTimeoutMs, partDeps) : Promise.resolve(null),
      ])
      const refused = refuseRootOnCache(asDevice(cacheDev, partitionKey('cache', opts.cmdline)), asDevice(rootDev, partitionKey('root', opts.cmdline)))
      if (refused) throw refused
      return Promise.all([
        openResolved(cacheDev, { ...partDeps, role: 'cache', mountpoint: cacheMount, deadlineMs: it.deviceTimeoutMs, mayFormat: it.format.cache }),
        it.requestedStyle === 'disked'
          ? openResolved(rootDev, { ...partDeps, role: 'root', mountpoint: rootMount, deadlineMs: it.deviceTimeoutMs, mayFormat: it.format.root })
          : Promise.resolve({ state: 'unset' as const }),
      ])
    })
    rootMounted = rootState.state === 'mounted'
    inv = { cache: cacheState, root: rootState }
    let diskCache: unknown
    let previous: string | undefined
    if (cacheState.state === 'mounted') {
      reads = await startReadCounter(cacheState.device, opts.sysClassBlock)
      const c = await timer.step('cache', async () => {
        diskCache = await pipeline.openCache(cacheMount, log)
        if (it.verify === 'fast' && pipeline.startFastDigest) {
          const stop = new AbortController()
          const signal = opts.signal ? AbortSignal.any([stop.signal, opts.signal]) : stop.signal
          const started = await pipeline.startFastDigest(diskCache, it.image.sha256, signal)
          if (started) early = { digest: started.digest, stop }
        }
        return pipeline.contents(diskCache, it.image.sha256)
      })
      inv.cacheContents = { hasImage: c.hasImage, evictableBytes: c.evictableBytes }
      previous = c.previous
    }
    plan = planBoot(it, inv)
    for (const f of plan.fallbacks) log.warn({ kind: f.kind }, `fallback: ${f.reason}`)

    if (plan.action === 'clear-cache-reboot') return await clearAndReboot(plan.actionReason ?? 'cache full')

    // The manifest, pinned by the descriptor's digest and size (checked by the manifest's one gate, parseManifest).
    const pubkey = it.pubkey ? await readFile(it.pubkey, 'utf8').catch((e: unknown) => {
      throw new ConfigError('rd.bootagent.pubkey', `cannot read ${it.pubkey}: ${(e as Error).message}`)
    }) : undefined
    const manifest = await timer.step('manifest', () =>
      logOp(log, 'manifest', { url: it.image.manifest }, () =>
        pipeline.fetchManifest(it.image.manifest, {
          log,
          timeoutMs: httpTimeoutMs,
          pinned: { sha256: it.image.sha256, size: it.image.size, by: 'the boot descriptor' },
          node,
          ...(pubkey ? { publicKey: pubkey } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(bearer ? { bearer } : {}),
        }),
      ),
    )

    // The image: into the cache partition, or RAM when there is none or it is full.
    const pin = [it.image.sha256, ...(previous ? [previous] : [])]
    const fetchInto = async (cache: unknown): Promise<FetchedImage> =>
      logOp(log, 'fetch', { sha256: it.image.sha256, inRam: cache !== diskCache }, () =>
        pipeline.fetchImage({ manifest, cache, log, pin, verify: it.verify, node, streams: it.streams, ...(it.image.mirrors ? { mirrors: it.image.mirrors } : {}), ...(cache === diskCache && early ? { digest: early.digest } : {}), ...(opts.signal ? { signal: opts.signal } : {}), ...(bearer ? { bearer } : {}) }),
      )
    const ramCache = async (): Promise<unknown> => {
      const dir = join(opts.runDir, 'ram-cache')
      await makeDir(dir, 0o700)
      return pipeline.openCache(dir, log)
    }
    fetched = await timer.step('fetch', async () => {
      if (plan?.cache.mode !== 'partition') {
        early?.stop.abort()
        return fetchInto(await ramCache())
      }
      try {
        return await fetchInto(diskCache)
      } catch (e) {
        if (!(e instanceof CacheFullError) || !plan || cacheState.state !== 'mounted') throw e
        plan = planCacheFull(plan, { needed: e.needed, available: e.available, capacityBytes: cacheState.capacityBytes })
        log.warn({ kind: 'cache-full' }, `fallback: ${plan.fallbacks.at(-1)?.reason}`)
        if (plan.action === 'clear-cache-reboot') throw new ClearAndReboot(plan.actionReason ?? e.message)
        return fetchInto(await ramCache())
      } finally {
        early?.stop.abort() // used by now, or not at all
      }
    })
    bytesReadVerifying = await reads?.stop()
    log.info({ verification: verificationName(fetched.hit, fetched.verifiedBy), bytesReadVerifying, device: reads?.device, sealed: fetched.sealed, readBecause: fetched.readBecause }, `image verified: ${verificationName(fetched.hit, fetched.verifiedBy)}, ${bytesReadVerifying ?? '?'} bytes read from the cache device`)
    const released = pipeline.release?.().catch(() => undefined)
    if (inv.cacheContents?.hasImage && plan.cache.mode === 'partition' && (!fetched.hit || fetched.chunksRepaired > 0)) {
      extraEvents.push(
        makeEvent('integrity', node, { what: 'cached image failed re-verification and was re-fetched before use', object: fetched.path, chunksRepaired: fetched.chunksRepaired, bytesFetched: fetched.bytesDownloaded }, { image: { name: it.image.name, sha256: it.image.sha256 } }),
      )
    }

    // Root fit from the image's own inode table, before anything is wiped (an overlay root holds only changes: not asked).
    const image = fetched.path
    const measure = needsUnpackedSize(plan) ? await timer.step('measure', () => measureImage(image, run, opts.signal)) : undefined
    if (measure && plan.root.mode === 'partition' && rootState.state === 'mounted') {
      plan = planRootFit(plan, { neededBytes: measure.neededBytes, capacityBytes: rootState.capacityBytes })
      if (plan.root.mode !== 'partition') log.warn({ kind: 'root-too-small' }, `fallback: ${plan.fallbacks.at(-1)?.reason}`)
    }
    if (plan.root.mode !== 'partition' && rootMounted) {
      await unmount(run, rootMount)
      rootMounted = false
    }
    const p = plan
    const res = await timer.step('root', () =>
      logOp(log, `root ${p.style}`, { image, sysroot: opts.sysroot }, () =>
        prepareRoot(p, image, { run, runDir: opts.runDir, sysroot: opts.sysroot, log, step: (name, fn) => timer.step(`root.${name}`, fn), ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.now ? { now: opts.now } : {}) }),
      ),
    )
    init = res.init
    overlay = res.overlay
    // Now mounted at the sysroot; the work mount is gone (unpack) or holds the overlay's layers and stays (overlay).
    rootMounted = false
    // An image held in RAM only to be unpacked is not needed any more (roram still reads it).
    if (plan.cache.mode === 'ram' && plan.style !== 'roram') {
      await rm(join(opts.runDir, 'ram-cache'), { recursive: true, force: true })
      fetched = { ...fetched, path: '' }
    }
    await released
    await fetched.recorded?.catch((e: unknown) => log.warn({ err: e }, 'the cache hit was used but could not be recorded in its metadata (lastUsedAt stays older)'))
    const rec = record('ok')
    const { recordPath } = await finish(rec)
    log.info({ style: rec.style, hit: rec.cache.hit, bytesFetched: rec.bytesFetched, timings: rec.timings }, 'boot stage done')
    return { record: rec, recordPath, exitCode: EXIT_CODES.ok, plan }
  } catch (e) {
    early?.stop.abort()
    await fetched?.recorded?.catch(() => undefined) // the object's lock is released before the stage ends
    if (e instanceof ClearAndReboot) return await clearAndReboot(e.message)
    if (rootMounted) await unmount(run, rootMount).catch(() => undefined)
    if (e instanceof IntegrityError) {
      // Bytes (or a manifest) that are not what they were pinned to: the head node must hear of it (SPEC §6).
      extraEvents.push(
        makeEvent('integrity', node, { what: e.message, algorithm: e.algorithm, expected: e.expected, found: e.found, url: e.url }, intent ? { image: { name: intent.image.name, sha256: intent.image.sha256 } } : {}),
      )
    }
    const rec = record('failed', { error: errorSummary(e), action: intent?.onfail ?? opts.cmdline.onfail ?? 'emergency' })
    log.error({ err: e, code: rec.error?.code }, `boot failed: ${rec.error?.message}`)
    const { recordPath } = await finish(rec)
    const exitCode =
      e instanceof ConfigError
        ? EXIT_CODES.usage
        : await actOnFailure(rec.action ?? 'emergency', { run, log, rebootDelayMs: intent?.rebootDelayMs ?? opts.cmdline.rebootDelayMs ?? 30_000, ...(opts.sleep ? { sleep: opts.sleep } : {}), ...(opts.mayReboot !== undefined ? { mayReboot: opts.mayReboot } : {}) })
    return { record: rec, recordPath, exitCode, ...(plan ? { plan } : {}) }
  }

  async function clearAndReboot(reason: string): Promise<StageOutcome> {
    early?.stop.abort()
    if (rootMounted) await unmount(run, rootMount).catch(() => undefined)
    let cleared = false
    try {
      await pipeline.clear(await pipeline.openCache(cacheMount, log))
      cleared = true
    } catch (e) {
      log.error({ err: e }, 'clearing the cache failed')
    }
    extraEvents.push(makeEvent('cache', node, { action: 'clear', reason, cleared }))
    const rec = record('failed', { error: { code: 'ECACHEFULL', message: reason }, action: 'reboot' })
    const { recordPath } = await finish(rec)
    const exitCode = await actOnFailure('reboot', { run, log, rebootDelayMs: intent?.rebootDelayMs ?? 30_000, ...(opts.sleep ? { sleep: opts.sleep } : {}), ...(opts.mayReboot !== undefined ? { mayReboot: opts.mayReboot } : {}) })
    return { record: rec, recordPath, exitCode, ...(plan ? { plan } : {}) }
  }
}

/** Thrown inside the fetch step to leave it for the clear-and-reboot path. */
class ClearAndReboot extends BootAgentError {
  constructor(reason: string) {
    super('ECACHEFULL', reason)
  }
}

const intentTimeout = (c: BootCmdline): number => c.httpTimeoutMs ?? 30_000

/** A resolved partition as the plan's check sees it (undefined: not configured or not found). */
const asDevice = (r: ResolvedPartition | null, key: string): ResolvedDevice | undefined =>
  r?.realDevice ? { spec: r.spec.text, key, device: r.realDevice, ...(r.devnum ? { devnum: r.devnum } : {}) } : undefined
