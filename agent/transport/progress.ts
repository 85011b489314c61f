/**
 * Download progress for the console and the journal: bytes, rate, ETA,
 * logged every `intervalMs` or each 10 % — not per chunk.
 */
import type { Logger } from '../core/log.js'

export interface ProgressInfo {
  /** Bytes received so far (this run). */
  bytes: number
  /** Bytes this run has to receive. */
  total: number
  /** Bytes per second since the start. */
  rate: number
  /** Seconds left at that rate, or undefined before there is a rate. */
  etaS: number | undefined
}

export class Progress {
  private bytes = 0
  private lastLog = 0
  private lastDecile = 0
  private readonly started: number

  constructor(
    private readonly total: number,
    private readonly log: Logger,
    private readonly fields: Record<string, unknown>,
    private readonly onProgress?: (p: ProgressInfo) => void,
    private readonly intervalMs = 2000,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.started = this.now()
    this.lastLog = this.started
  }

  info(): ProgressInfo {
    const s = (this.now() - this.started) / 1000
    const rate = s > 0 ? this.bytes / s : 0
    return { bytes: this.bytes, total: this.total, rate, etaS: rate > 0 ? Math.max(0, (this.total - this.bytes) / rate) : undefined }
  }

  add(n: number): void {
    this.bytes += n
    const t = this.now()
    const decile = this.total > 0 ? Math.floor((this.bytes * 10) / this.total) : 10
    if (t - this.lastLog >= this.intervalMs || decile > this.lastDecile) {
      this.lastLog = t
      this.lastDecile = decile
      const p = this.info()
      this.onProgress?.(p)
      this.log.info(
        { ...this.fields, bytes: p.bytes, total: p.total, rateMBps: +(p.rate / 1e6).toFixed(1), etaS: p.etaS === undefined ? null : Math.round(p.etaS) },
        `download ${this.total ? Math.floor((100 * p.bytes) / this.total) : 100}%`,
      )
    }
  }
}
