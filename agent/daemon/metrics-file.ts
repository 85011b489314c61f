/**
 * The node's facts for Prometheus, through node_exporter's textfile
 * collector (https://github.com/prometheus/node_exporter#textfile-collector):
 * the daemon writes `boot-agent.prom` into the collector's directory, whole
 * and at once (temp file beside it, then rename: the collector reads only
 * `*.prom`, so it never sees half a file), at start, shortly after events and
 * every interval. What it says comes from the boot record (the boot as the
 * stage recorded it) and the daemon's counters; the text is prom-client's
 * exposition format, the same library the head serves /metrics with.
 *
 * Metric names, help and labels are listed in docs/operations.md.
 */
import { join } from 'node:path'
import { Counter, Gauge, Registry } from 'prom-client'
import { writeFileDurable } from '../core/durable.js'
import { messageOf } from '../core/errors.js'
import { type Logger, silentLogger } from '../core/log.js'
import { system } from '../core/system.js'
import type { BootRecordView } from './boot-record.js'
import type { DaemonObserver, DaemonStats, ObserverContext } from './observer.js'
import type { SlurmCounters } from './slurm.js'

/** The file node_exporter reads, in Debian's default collector directory. */
export const defaultMetricsFile = (): string => join(system.promTextfileDir, 'boot-agent.prom')
/** Rewrite at least this often (spool depth changes without events). */
export const DEFAULT_METRICS_INTERVAL_MS = 30_000
/** After events, wait this long for more before writing (a flood writes once). */
export const METRICS_DEBOUNCE_MS = 1_000
/** Readable by node_exporter's own user (Debian: prometheus). */
const METRICS_FILE_MODE = 0o644

/** Everything the textfile says, as plain data. */
export interface NodeMetricsInput {
  node: string
  bootRecord?: BootRecordView
  stats: DaemonStats
  slurm?: SlurmCounters
}

const ms = (v: number | undefined): number | undefined => (v === undefined ? undefined : v / 1000)

/** Renders the textfile (Prometheus text exposition format 0.0.4). */
export const renderNodeMetrics = async (m: NodeMetricsInput): Promise<string> => {
  const registry = new Registry()
  const registers = [registry]
  const gauge = (name: string, help: string, labelNames: string[] = []): Gauge => new Gauge({ name, help, labelNames, registers })
  const counter = (name: string, help: string, labelNames: string[] = []): Counter => new Counter({ name, help, labelNames, registers })
  const br = m.bootRecord
  if (br) {
    const image = br.image ?? {}
    gauge('boot_agent_boot_info', 'The booted image (digest and name), how it was booted and the boot result; always 1', ['node', 'sha256', 'name', 'style', 'result'])
      .set({ node: m.node, sha256: image.sha256 ?? '', name: image.name ?? '', style: br.style ?? '', result: br.result ?? '' }, 1)
    gauge('boot_agent_boot_success', 'Whether the last boot stage succeeded (1) or failed (0)').set(br.result === 'ok' ? 1 : 0)
    const total = ms(br.timings?.total)
    if (total !== undefined) gauge('boot_agent_boot_duration_seconds', 'Wall time of the boot stage').set(total)
    const steps = Object.entries(br.timings ?? {}).filter(([k]) => k !== 'total')
    if (steps.length) {
      const g = gauge('boot_agent_boot_step_duration_seconds', 'Wall time of each step of the boot stage', ['step'])
      for (const [step, v] of steps) g.set({ step }, v / 1000)
    }
    if (br.cache?.hit !== undefined) gauge('boot_agent_boot_cache_hit', 'Whether the image came from the local cache (1, a hit) or had to be fetched (0, a miss)').set(br.cache.hit ? 1 : 0)
    gauge('boot_agent_boot_fetched_bytes', 'Image bytes downloaded during the boot').set(br.bytesFetched ?? 0)
    gauge('boot_agent_boot_reused_bytes', 'Image bytes taken from older cached versions instead of downloaded').set(br.bytesReused ?? 0)
    gauge('boot_agent_boot_fallbacks', 'Fallbacks the boot stage took (0: booted as asked)').set(br.fallbacks.length)
    if (br.fallbacks.length) {
      const fb = gauge('boot_agent_boot_fallbacks_by_kind', 'Fallbacks the boot stage took, by kind', ['kind'])
      for (const f of br.fallbacks) fb.inc({ kind: f.kind }, 1)
    }
  }
  const errors = counter('boot_agent_errors_total', 'Kernel errors (squashfs-error, io-error: records) and integrity reports seen by the daemon since it started, by kind', ['kind'])
  for (const [kind, n] of Object.entries(m.stats.errorsByKind)) errors.inc({ kind }, n)
  gauge('boot_agent_spool_events', 'Events waiting in the daemon spool for the head node').set(m.stats.spooled)
  counter('boot_agent_spool_dropped_events_total', 'Events the full spool had to drop').inc(m.stats.lostEvents)
  counter('boot_agent_kmsg_lost_records_total', 'Kernel log records lost this boot (ring overrun, or overwritten before the daemon read them)').inc(m.stats.kmsgLost)
  if (m.slurm) {
    const s = counter('boot_agent_slurm_actions_total', 'Slurm actions the daemon took, by action (drain, resume, dry-run, failure)', ['action'])
    s.inc({ action: 'drain' }, m.slurm.drains)
    s.inc({ action: 'resume' }, m.slurm.resumes)
    s.inc({ action: 'dry-run' }, m.slurm.dryRuns)
    s.inc({ action: 'failure' }, m.slurm.failures)
  }
  gauge('boot_agent_metrics_written_timestamp_seconds', 'When the daemon wrote this file (Unix time)').set(Math.floor(Date.now() / 1000))
  return registry.metrics()
}

export interface MetricsFileOptions {
  /** Target file; its directory must exist (node_exporter's --collector.textfile.directory). */
  path: string
  intervalMs?: number
  /** The Slurm guard's counters, when Slurm is on. */
  slurm?: () => SlurmCounters
  log?: Logger
}

/** A daemon observer that keeps the textfile current. */
export class MetricsTextfile implements DaemonObserver {
  private ctx: ObserverContext | undefined
  private timer: NodeJS.Timeout | undefined
  private debounce: NodeJS.Timeout | undefined
  private writing: Promise<void> = Promise.resolve()
  private failedBefore = false
  private readonly log: Logger
  /** Files written (tests). */
  writes = 0

  constructor(private readonly opts: MetricsFileOptions) {
    this.log = opts.log ?? silentLogger()
  }

  async start(ctx: ObserverContext): Promise<void> {
    this.ctx = ctx
    await this.write()
    this.timer = setInterval(() => void this.write(), this.opts.intervalMs ?? DEFAULT_METRICS_INTERVAL_MS)
    this.timer.unref()
  }

  events(): void {
    this.debounce ??= setTimeout(() => {
      this.debounce = undefined
      void this.write()
    }, METRICS_DEBOUNCE_MS)
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    clearTimeout(this.debounce)
    this.debounce = undefined
    await this.write()
  }

  /** Writes the file now (one write at a time); a failure is logged once per run of failures, never thrown. */
  write(): Promise<void> {
    this.writing = this.writing.then(async () => {
      const ctx = this.ctx
      if (!ctx) return
      try {
        const text = await renderNodeMetrics({
          node: ctx.node, stats: await ctx.stats(),
          ...(ctx.bootRecord ? { bootRecord: ctx.bootRecord } : {}),
          ...(this.opts.slurm ? { slurm: this.opts.slurm() } : {}),
        })
        await writeFileDurable(this.opts.path, text, { mode: METRICS_FILE_MODE })
        this.writes++
        if (this.failedBefore) this.log.info({ path: this.opts.path }, 'metrics textfile written again')
        this.failedBefore = false
      } catch (e) {
        if (!this.failedBefore) this.log.warn({ path: this.opts.path, err: messageOf(e) }, 'cannot write the metrics textfile (is node_exporter\'s textfile directory there?)')
        this.failedBefore = true
      }
    })
    return this.writing
  }
}
