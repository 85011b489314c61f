/**
 * Drains this node in Slurm on its first image or disk trouble, and resumes
 * it after a verified boot if (and only if) the drain is ours: a daemon
 * observer (observer.ts) that carries out slurm-decide.ts's decisions with
 * `scontrol`, from the node itself as LBNL NHC does — but on the kernel's
 * line, not on a 300 s timer.
 *
 * `scontrol` failing (slurmctld down, munge broken) is retried a few times,
 * then logged and counted (`failures`, in the metrics); it never stops the
 * daemon. The boot we drained in is recorded in `<stateDir>/slurm.json`, so a
 * daemon restarted later in the same boot does not resume its own drain.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { run as defaultRun, type Runner } from '../core/exec.js'
import { isErrno, messageOf } from '../core/errors.js'
import { writeFileDurable } from '../core/durable.js'
import { type Logger, silentLogger } from '../core/log.js'
import { commands } from '../core/system.js'
import { type RetryPolicy, retrying } from '../core/retry.js'
import type { AgentEvent } from '../protocol/event.js'
import type { DaemonObserver, ObserverContext } from './observer.js'
import { DRAIN_KINDS, decideAtStart, decideOnEvent, parseNodeLine, type SlurmDecision, type SlurmMode, type SlurmNodeInfo } from './slurm-decide.js'

/** Each scontrol call gets this long (slurmctld answers in milliseconds; a hung one must not hold the drain). */
export const SCONTROL_TIMEOUT_MS = 10_000
/** Three attempts, 0.5–2 s apart: a slurmctld restart or a munge hiccup passes, a dead one is reported within seconds. */
export const SCONTROL_RETRY: RetryPolicy = {
  maxAttempts: 3, baseDelayMs: 500, maxDelayMs: 2_000, minDelayMs: 250,
  retryStatuses: [], retryCodes: ['ECOMMAND', 'ETIMEOUT'], finalCodePrefixes: [],
}
const STATE_FILE = 'slurm.json'

export interface SlurmOptions {
  mode: SlurmMode
  /** The Slurm node name (slurm-decide.ts's slurmNodeName). */
  nodeName: string
  /** Log the `scontrol update` it would run instead of running it (reads still run). */
  dryRun?: boolean
  /** Runs scontrol (tests script it; default the real one). */
  run?: Runner
  /** Environment for scontrol (SLURM_CONF). Default the daemon's. */
  env?: NodeJS.ProcessEnv
  retry?: RetryPolicy
  log?: Logger
}

/** What the guard did, for the metrics and the tests. */
export interface SlurmCounters {
  drains: number
  resumes: number
  /** scontrol calls that failed after their retries. */
  failures: number
  /** Commands logged instead of run (dry run). */
  dryRuns: number
}

interface Recorded {
  bootId: string
  nodeName: string
  reason: string
  time: string
}

export class SlurmGuard implements DaemonObserver {
  readonly counters: SlurmCounters = { drains: 0, resumes: 0, failures: 0, dryRuns: 0 }
  /** Every decision taken, in order (what the log says; tests read it). */
  readonly decisions: SlurmDecision[] = []
  private ctx: ObserverContext | undefined
  private drainedThisBoot = false
  private trouble = false
  /** A drain is queued or running: more trouble meanwhile adds nothing (a flood with slurmctld down must not queue a drain per event). */
  private draining = false
  /** Every scontrol action runs on this chain, one at a time, in order. */
  private chain: Promise<void> = Promise.resolve()
  private readonly log: Logger
  private readonly run: Runner

  constructor(private readonly opts: SlurmOptions) {
    this.log = (opts.log ?? silentLogger()).child({ slurmNode: opts.nodeName, slurm: opts.mode })
    this.run = opts.run ?? defaultRun
  }

  async start(ctx: ObserverContext): Promise<void> {
    this.ctx = ctx
    const rec = await this.readRecord()
    this.drainedThisBoot = rec?.bootId === ctx.bootId
  }

  caughtUp(): void {
    this.enqueue(async () => {
      const ctx = this.ctx
      if (!ctx || this.opts.mode !== 'drain+resume') return
      const br = ctx.bootRecord
      const info = await this.show()
      const rec = await this.readRecord()
      const d = decideAtStart({
        mode: this.opts.mode,
        verifiedBoot: br?.result === 'ok' && br.image?.sha256 !== undefined,
        ...(rec ? { drainedInBoot: rec.bootId } : {}),
        bootId: ctx.bootId,
        troubleThisBoot: this.trouble || this.drainedThisBoot,
        info,
      })
      await this.carryOut(d)
    })
  }

  events(events: readonly AgentEvent[]): void {
    const hit = events.find((e) => (DRAIN_KINDS as readonly string[]).includes(e.kind))
    if (!hit || this.opts.mode === 'off') return
    this.trouble = true
    if (this.drainedThisBoot || this.draining) return
    const sha256 = hit.image?.sha256 ?? this.ctx?.bootRecord?.image?.sha256
    this.draining = true
    this.enqueue(async () => {
      try {
        if (!this.drainedThisBoot) await this.carryOut(decideOnEvent(this.opts.mode, hit.kind, sha256, false, await this.show()))
      } finally {
        this.draining = false
      }
    })
  }

  async stop(): Promise<void> {
    await this.chain
  }

  /** Waits for every action queued so far (tests). */
  idle(): Promise<void> {
    return this.chain
  }

  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((e: unknown) => this.log.error({ err: messageOf(e) }, 'slurm action failed'))
  }

  private async carryOut(d: SlurmDecision): Promise<void> {
    this.decisions.push(d)
    if (d.action === 'none') {
      this.log.info({ op: 'slurm' }, `slurm: nothing to do (${d.why})`)
      if (d.why.startsWith('already drained')) this.drainedThisBoot = true
      return
    }
    const args = d.action === 'drain'
      ? ['update', `NodeName=${this.opts.nodeName}`, 'State=DRAIN', `Reason=${d.reason}`]
      : ['update', `NodeName=${this.opts.nodeName}`, 'State=RESUME']
    if (d.action === 'drain') this.drainedThisBoot = true
    if (this.opts.dryRun) {
      this.counters.dryRuns++
      this.log.warn({ op: 'slurm', dryRun: true, command: [commands.scontrol, ...args] }, `slurm dry run: would ${d.action} ${this.opts.nodeName} (${d.reason})`)
      return
    }
    try {
      await this.scontrol(args)
    } catch (e) {
      this.counters.failures++
      if (d.action === 'drain') this.drainedThisBoot = false // the next trouble tries again
      this.log.error({ op: 'slurm', err: messageOf(e), command: args }, `slurm: could not ${d.action} ${this.opts.nodeName}`)
      return
    }
    if (d.action === 'drain') {
      this.counters.drains++
      await this.writeRecord({ bootId: this.ctx?.bootId ?? '', nodeName: this.opts.nodeName, reason: d.reason, time: new Date().toISOString() })
      this.log.warn({ op: 'slurm', reason: d.reason }, `slurm: drained ${this.opts.nodeName}: ${d.reason}`)
    } else {
      this.counters.resumes++
      this.log.info({ op: 'slurm', reason: d.reason }, `slurm: resumed ${this.opts.nodeName} (our drain: ${d.reason})`)
    }
  }

  /** The node's state and reason, or undefined when Slurm cannot be asked (logged). */
  private async show(): Promise<SlurmNodeInfo | undefined> {
    try {
      const out = await this.scontrol(['show', 'node', '-o', this.opts.nodeName])
      const info = parseNodeLine(out.split('\n').find((l) => l.includes('State=')) ?? '')
      if (!info) this.log.warn({ op: 'slurm', output: out.slice(0, 200) }, 'slurm: scontrol show node printed no State=')
      return info
    } catch (e) {
      this.counters.failures++
      this.log.error({ op: 'slurm', err: messageOf(e) }, `slurm: cannot read the state of ${this.opts.nodeName}`)
      return undefined
    }
  }

  private async scontrol(args: string[]): Promise<string> {
    const r = await retrying(() => this.run(commands.scontrol, args, { timeoutMs: SCONTROL_TIMEOUT_MS, ...(this.opts.env ? { env: this.opts.env } : {}) }), {
      policy: this.opts.retry ?? SCONTROL_RETRY,
      onRetry: ({ attempt, waitMs, error }) => this.log.warn({ op: 'slurm', attempt, waitMs, err: messageOf(error) }, 'slurm: scontrol failed; retrying'),
    })
    return r.stdout
  }

  private async readRecord(): Promise<Recorded | undefined> {
    if (!this.ctx) return undefined
    try {
      const o = JSON.parse(await readFile(join(this.ctx.stateDir, STATE_FILE), 'utf8')) as Partial<Recorded>
      return typeof o.bootId === 'string' && o.nodeName === this.opts.nodeName ? (o as Recorded) : undefined
    } catch (e) {
      if (!isErrno(e, 'ENOENT')) this.log.warn({ err: messageOf(e) }, `slurm: ${STATE_FILE} unreadable; ignored`)
      return undefined
    }
  }

  private async writeRecord(r: Recorded): Promise<void> {
    if (!this.ctx) return
    await writeFileDurable(join(this.ctx.stateDir, STATE_FILE), JSON.stringify(r) + '\n').catch((e: unknown) =>
      this.log.error({ err: messageOf(e) }, `slurm: cannot record the drain in ${STATE_FILE}`))
  }
}
