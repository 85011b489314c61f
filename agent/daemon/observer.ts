/**
 * What else may watch the daemon work — the Slurm drain (slurm.ts) and the
 * Prometheus textfile (metrics-file.ts) — without the daemon knowing either.
 * An observer that throws is logged and the daemon goes on: reporting to a
 * scheduler or a dashboard must never stop the kernel-log reader.
 */
import type { Logger } from '../core/log.js'
import { messageOf } from '../core/errors.js'
import type { AgentEvent } from '../protocol/event.js'
import type { BootRecordView } from './boot-record.js'

/** The event kinds counted as errors (metrics: errors by kind). */
export const ERROR_KINDS = ['squashfs-error', 'io-error', 'integrity'] as const

/** The daemon's counters an observer may read at any time. */
export interface DaemonStats {
  /** Kernel log records lost (ring overrun, or overwritten before the daemon read them), this boot. */
  kmsgLost: number
  /** Events waiting in the daemon's spool. */
  spooled: number
  /** Events the spool had to drop (full). */
  lostEvents: number
  /** Kernel errors by event kind (coalesced records counted one by one) and integrity reports, since the daemon started. */
  errorsByKind: Record<string, number>
}

export interface ObserverContext {
  node: string
  bootId: string
  stateDir: string
  bootRecord?: BootRecordView
  stats(): Promise<DaemonStats>
}

export interface DaemonObserver {
  /** Once the daemon knows the boot, before it reads the kernel log. */
  start?(ctx: ObserverContext): Promise<void>
  /** Once per run: everything the kernel log held at start has been read and spooled. */
  caughtUp?(): void
  /** Events just spooled (kernel errors, self-check results, losses, heartbeats). */
  events?(events: readonly AgentEvent[]): void
  /** The daemon stops; finish what is under way (bounded). */
  stop?(): Promise<void>
}

/** Calls every observer, isolating each one's failure. */
export class Observers {
  private caught = false
  /** {@link DaemonStats.errorsByKind}, counted from the events as they are spooled. */
  readonly errorsByKind: Record<string, number> = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0]))
  constructor(private readonly list: readonly DaemonObserver[], private readonly log: Logger) {}

  private guard(what: string, fn: () => unknown): Promise<void> {
    try {
      return Promise.resolve(fn()).then(() => undefined, (e: unknown) => this.log.error({ err: messageOf(e), what }, 'a daemon observer failed'))
    } catch (e) {
      this.log.error({ err: messageOf(e), what }, 'a daemon observer failed')
      return Promise.resolve()
    }
  }

  async start(ctx: ObserverContext): Promise<void> {
    for (const o of this.list) await this.guard('start', () => o.start?.(ctx))
  }

  caughtUp(): void {
    if (this.caught) return
    this.caught = true
    for (const o of this.list) void this.guard('caughtUp', () => o.caughtUp?.())
  }

  events(events: readonly AgentEvent[]): void {
    if (!events.length) return
    for (const e of events) if (e.kind in this.errorsByKind) this.errorsByKind[e.kind] = (this.errorsByKind[e.kind] ?? 0) + errorCount(e)
    for (const o of this.list) void this.guard('events', () => o.events?.(events))
  }

  async stop(): Promise<void> {
    for (const o of this.list) await this.guard('stop', () => o.stop?.())
  }
}

/** How many kernel errors an event stands for: its coalesced count, else one. */
export const errorCount = (e: AgentEvent): number => {
  const n = (e.data as { count?: unknown }).count
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : 1
}
