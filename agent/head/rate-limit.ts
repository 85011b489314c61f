/**
 * Per-node token buckets for event batches: a flooding node is told to wait
 * (429 with Retry-After) instead of filling the head node's disk. Its events
 * stay in its own spool and arrive later; nothing is dropped here.
 */

export interface RateLimitOptions {
  /** Events a node may send at once (bucket size). */
  burstEvents: number
  /** Events per second a node earns back. */
  eventsPerSecond: number
  /** Clock in milliseconds, for tests. */
  now?: () => number
  /** Most nodes tracked; full buckets beyond it are forgotten (they hold no state worth keeping). */
  maxTracked?: number
}

/** Per node: a burst of 2000 events, then 200 a second. */
export const DEFAULT_RATE_LIMIT: RateLimitOptions = { burstEvents: 2000, eventsPerSecond: 200 }

interface Bucket {
  tokens: number
  at: number
}

/** One token bucket per node (key); the head passes its clock as `now`. */
export class RateLimiter {
  private readonly opts: Required<Omit<RateLimitOptions, 'now'>> & { now: () => number }
  private readonly buckets = new Map<string, Bucket>()

  constructor(opts: RateLimitOptions = DEFAULT_RATE_LIMIT) {
    this.opts = { maxTracked: 100_000, now: Date.now, ...opts }
  }

  private refill(key: string): Bucket {
    const now = this.opts.now()
    const b = this.buckets.get(key) ?? { tokens: this.opts.burstEvents, at: now }
    b.tokens = Math.min(this.opts.burstEvents, b.tokens + ((now - b.at) / 1000) * this.opts.eventsPerSecond)
    b.at = now
    this.buckets.set(key, b)
    return b
  }

  /**
   * Takes `cost` tokens for `key`. Returns 0 when allowed, else the
   * milliseconds to wait before the same request would be allowed.
   */
  take(key: string, cost: number): number {
    const b = this.refill(key)
    const need = Math.min(Math.max(1, cost), this.opts.burstEvents)
    if (b.tokens >= need) {
      b.tokens -= need
      this.prune()
      return 0
    }
    return Math.ceil(((need - b.tokens) / this.opts.eventsPerSecond) * 1000)
  }

  /** Gives back tokens taken for a request that stored nothing new (duplicates, failures). */
  refund(key: string, n: number): void {
    const b = this.buckets.get(key)
    if (b) b.tokens = Math.min(this.opts.burstEvents, b.tokens + n)
  }

  private prune(): void {
    if (this.buckets.size <= this.opts.maxTracked) return
    for (const [k, b] of this.buckets) {
      if (b.tokens >= this.opts.burstEvents) this.buckets.delete(k)
      if (this.buckets.size <= this.opts.maxTracked) break
    }
  }
}

/**
 * Says yes to a key at most once per `intervalMs` (by `now`): a flooding
 * node is worth one warning a minute, not one per refused request.
 */
export class LogThrottle {
  private readonly last = new Map<string, number>()

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
    /** Most keys remembered; past it all are forgotten (a forgotten key is warned about once more). */
    private readonly maxKeys = 10_000,
  ) {}

  /** True when `key` was not let through in the last interval; it is let through now. */
  due(key: string): boolean {
    const now = this.now()
    if ((this.last.get(key) ?? 0) > now - this.intervalMs) return false
    if (this.last.size > this.maxKeys) this.last.clear()
    this.last.set(key, now)
    return true
  }
}
