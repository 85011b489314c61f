/**
 * Delivers spooled events to the head node (SPEC §8):
 * `POST {server}/v1/nodes/{node}/events` with `{events}`; the server answers
 * 200 `{accepted, duplicates}` only once the events are durably stored, and
 * keeps one copy per event id. So: an event leaves the spool only after a
 * 200 for a batch holding it (at-least-once), and the ids make it
 * exactly-once at the server.
 *
 * Retry policy: the one of every HTTP caller (core/retry.ts). Network
 * errors, timeouts and its retried statuses (408, 425, 429, 500, 502–504)
 * are retried with capped exponential backoff and full jitter, honouring
 * Retry-After; 400/413/422 halve the batch (a single event the server
 * rejects is dropped and counted as lost, so one poison event cannot block
 * the spool forever); the statuses the policy calls final are retried at the
 * longest backoff (events are never given up; a head node that does not
 * know us yet may learn). Every request has a deadline.
 */
import type { Logger } from '../core/log.js'
import { silentLogger } from '../core/log.js'
import { HttpError, messageOf } from '../core/errors.js'
import { type Sleep, sleep as realSleep } from '../core/clock.js'
import { DEFAULT_RETRY_POLICY, isRetryableStatus, parseRetryAfter, retryDelayMs, type RetryPolicy } from '../core/retry.js'
import { makeEvent, type AgentEvent } from '../protocol/event.js'
import { parseEventsAnswer } from '../protocol/parse.js'
import type { Spool, SpooledEvent } from './spool.js'
import { stableId } from './coalesce.js'
import { Mutex } from './mutex.js'
import { nodeHeaders } from '../protocol/node-header.js'

export const DEFAULT_BATCH_SIZE = 100
export const REQUEST_TIMEOUT_MS = 10_000
export const MIN_BACKOFF_MS = 500
export const MAX_BACKOFF_MS = 60_000
/** Statuses that mean "this batch, not the server": split it. */
const SPLIT_STATUSES = new Set([400, 413, 422])

export interface SenderOptions {
  /** Head node base URL, e.g. http://head:8080. */
  server: string
  node: string
  /** Spools drained in this order (the boot stage's first: its events are older). */
  spools: Spool[]
  log?: Logger
  /** Events per POST. Default 100. */
  batchSize?: number
  /** Deadline of one POST. Default 10 s. */
  requestTimeoutMs?: number
  minBackoffMs?: number
  maxBackoffMs?: number
  /** Bearer token sent as `Authorization: Bearer …` when the head node wants one. */
  token?: string
  /** Injectable HTTP client (default: node-fetch; global `fetch` fits too). */
  fetch?: PostFetch
  /** Injectable randomness for the jitter. */
  random?: () => number
  /** The wait between flushes and after failures (a wake or the run's abort ends it early). Default the real sleep. */
  sleep?: Sleep
  /** Held while a delivered batch is removed (the daemon holds it while it spools and moves its kmsg position). */
  lock?: Mutex
}

/**
 * The part of fetch the sender uses: one POST, its status, body and headers.
 *
 * The default is node-fetch (node:http), as for every other request the
 * agent makes, not Node's global fetch: the first global fetch in a process
 * loads undici and compiles its WebAssembly HTTP parser, and Node waits at
 * exit for the background optimisation of that parser — 0.2–0.7 s added to
 * every `boot-agent boot` that delivers its events (docs/performance.md,
 * "Boot stage").
 */
export type PostFetch = (
  url: string,
  init: { method: 'POST'; headers: Record<string, string>; body: string; signal: AbortSignal },
) => Promise<{ status: number; text(): Promise<string>; headers: { get(name: string): string | null } }>

/**
 * node-fetch, loaded at the first POST rather than with this module: the boot
 * stage imports the sender for its last step, and node-fetch (with https/tls,
 * zlib and web streams) should not be loaded before the stage's first action
 * (the descriptor request loads it when it needs it, boot/descriptor.ts).
 */
const defaultFetch: PostFetch = async (url, init) => {
  const [{ default: fetch }, { agentFor }] = await Promise.all([import('node-fetch'), import('../transport/trust.js')])
  return fetch(url, { ...init, agent: agentFor })
}

export interface FlushResult {
  sent: number
  duplicates: number
  /** Events the server refused one by one (counted as lost). */
  rejected: number
}

export const eventsUrl = (server: string, node: string): string =>
  `${server.replace(/\/+$/, '')}/v1/nodes/${encodeURIComponent(node)}/events`

/**
 * The sender's numbers for the one retry policy: waits between `minMs` and
 * `maxMs`, the first retry between `minMs` and 2·`minMs`, doubling; never
 * giving up (events are kept until delivered).
 */
export const senderRetryPolicy = (minMs: number = MIN_BACKOFF_MS, maxMs: number = MAX_BACKOFF_MS): RetryPolicy => ({
  ...DEFAULT_RETRY_POLICY,
  maxAttempts: Infinity,
  minDelayMs: minMs,
  baseDelayMs: 2 * minMs,
  maxDelayMs: maxMs,
})

/** An error's message with its cause's (fetch says only "fetch failed"; the cause says ECONNREFUSED). */
const describe = (e: unknown): string => {
  const cause = e instanceof Error ? (e.cause as { code?: unknown; message?: unknown } | undefined) : undefined
  const more = cause ? (typeof cause.code === 'string' ? cause.code : typeof cause.message === 'string' ? cause.message : '') : ''
  return more ? `${messageOf(e)}: ${more}` : messageOf(e)
}

export class Sender {
  readonly url: string
  private readonly opts: SenderOptions
  private readonly log: Logger
  private readonly fetchFn: PostFetch
  private readonly random: () => number
  private readonly sleep: Sleep
  private readonly lock: Mutex
  private wakeUp: (() => void) | undefined
  private woken = false
  /** Consecutive failed attempts (0 after a success). */
  failures = 0
  /** Last error, for status. */
  lastError: string | undefined

  constructor(opts: SenderOptions) {
    this.opts = opts
    this.url = eventsUrl(opts.server, opts.node)
    this.log = opts.log ?? silentLogger()
    this.fetchFn = opts.fetch ?? defaultFetch
    this.random = opts.random ?? Math.random
    this.sleep = opts.sleep ?? realSleep
    this.lock = opts.lock ?? new Mutex()
  }

  /** Asks a running {@link run} loop to flush now. */
  wake(): void {
    this.woken = true
    this.wakeUp?.()
  }

  private async post(events: AgentEvent[], signal?: AbortSignal): Promise<{ accepted: number; duplicates: number }> {
    const timeout = AbortSignal.timeout(this.opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS)
    const res = await this.fetchFn(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}), ...nodeHeaders(this.opts.node) },
      body: JSON.stringify({ events }),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    })
    const text = await res.text().catch(() => '')
    if (res.status !== 200) {
      throw new HttpError({ status: res.status, url: this.url, retryAfterMs: parseRetryAfter(res.headers.get('retry-after')), message: `HTTP ${res.status} from ${this.url}: ${text.slice(0, 200)}` })
    }
    return parseEventsAnswer(text)
  }

  /** The `lost` event for a spool's unreported drops (stable id: see Spool.lostState). */
  private async lostEvent(spool: Spool): Promise<{ event: AgentEvent; count: number } | undefined> {
    const s = await spool.lostState()
    if (s.count <= 0) return undefined
    const event = makeEvent('lost', this.opts.node, { source: 'spool', count: s.count, spool: spool.dir, totalLost: s.total }, {
      id: stableId('spool-lost', s.epoch, s.total - s.count),
    })
    return { event, count: s.count }
  }

  /** Sends one batch (with binary splitting on a refused batch). */
  private async sendBatch(spool: Spool, batch: SpooledEvent[], lost: { event: AgentEvent; count: number } | undefined, signal: AbortSignal | undefined, result: FlushResult): Promise<void> {
    const events = [...(lost ? [lost.event] : []), ...batch.map((b) => b.event)]
    try {
      const r = await this.post(events, signal)
      await this.lock.run(async () => {
        await spool.remove(batch.map((b) => b.file))
        if (lost) await spool.resetLost(lost.count)
      })
      result.sent += events.length
      result.duplicates += r.duplicates
    } catch (e) {
      if (!(e instanceof HttpError) || !SPLIT_STATUSES.has(e.status)) throw e
      if (events.length === 1) {
        this.log.error({ err: e, eventId: events[0]?.id, kind: events[0]?.kind }, 'head node refused an event; dropped and counted as lost')
        await this.lock.run(async () => {
          await spool.remove(batch.map((b) => b.file))
          if (lost) await spool.resetLost(lost.count)
          await spool.addLost(1)
        })
        result.rejected++
        return
      }
      const all: { b?: SpooledEvent; lost?: typeof lost }[] = [...(lost ? [{ lost }] : []), ...batch.map((b) => ({ b }))]
      const half = Math.ceil(all.length / 2)
      for (const part of [all.slice(0, half), all.slice(half)]) {
        const l = part.find((p) => p.lost)?.lost
        await this.sendBatch(spool, part.flatMap((p) => (p.b ? [p.b] : [])), l, signal, result)
      }
    }
  }

  /**
   * Sends everything spooled now, batch by batch. Throws on the first
   * failure (what was delivered before it stays delivered).
   */
  async flushOnce(signal?: AbortSignal): Promise<FlushResult> {
    const result: FlushResult = { sent: 0, duplicates: 0, rejected: 0 }
    const size = this.opts.batchSize ?? DEFAULT_BATCH_SIZE
    for (const spool of this.opts.spools) {
      // Bounded: each round removes what it sent or throws; the spool holds at most maxEvents.
      for (let round = 0; round <= spool.maxEvents / size + 2; round++) {
        const lost = await this.lostEvent(spool)
        const batch = await spool.peek(lost ? size - 1 : size)
        if (batch.length === 0 && !lost) break
        await this.sendBatch(spool, batch, lost, signal, result)
      }
    }
    return result
  }

  /**
   * Delivers until `signal` aborts: flushes when woken or every `intervalMs`,
   * backs off after failures.
   */
  async run(opts: { signal: AbortSignal; intervalMs?: number; onFlush?: (r: FlushResult) => void }): Promise<void> {
    const policy = senderRetryPolicy(this.opts.minBackoffMs, this.opts.maxBackoffMs)
    while (!opts.signal.aborted) {
      let waitMs = opts.intervalMs ?? 5_000
      this.woken = false
      try {
        const r = await this.flushOnce(opts.signal)
        if (this.failures) this.log.info({ url: this.url, after: this.failures }, 'head node reachable again')
        this.failures = 0
        this.lastError = undefined
        if (r.sent) this.log.debug({ ...r, url: this.url }, 'events delivered')
        opts.onFlush?.(r)
      } catch (e) {
        if (opts.signal.aborted) return
        this.failures++
        this.lastError = describe(e)
        // A status the policy calls final waits the longest; anything else (the network, a retried status) backs off.
        waitMs = e instanceof HttpError && !isRetryableStatus(e.status, policy) ? policy.maxDelayMs : retryDelayMs(e, this.failures, policy, this.random)
        this.log.warn({ url: this.url, attempt: this.failures, retryInMs: waitMs, err: this.lastError }, 'event delivery failed; kept in the spool')
      }
      if (this.woken && this.failures === 0) continue
      if (opts.signal.aborted) return // stopped during the flush: no wait
      const stop = new AbortController()
      const end = (): void => stop.abort()
      opts.signal.addEventListener('abort', end, { once: true })
      // A wake during backoff does not cut the backoff short (the head node is struggling).
      this.wakeUp = this.failures === 0 ? end : undefined
      try {
        await this.sleep(waitMs, stop.signal)
      } catch {
        // woken or stopped: the loop looks at why
      } finally {
        opts.signal.removeEventListener('abort', end)
        this.wakeUp = undefined
      }
    }
  }
}
