/**
 * The one retry policy of every HTTP caller — boot descriptor, manifest,
 * image ranges, event delivery — as plain data (after undici's
 * RetryHandler): which statuses and errno codes are worth another attempt,
 * capped exponential backoff with full jitter, and the server's
 * `Retry-After` honoured the same way everywhere. Callers differ only in
 * the numbers of their policy (attempts, delays), never in the rules.
 *
 * Retry decisions come from the error's type and codes, never its message.
 */
import { BootAgentError, HttpError, messageOf } from './errors.js'
import { type Sleep, sleep as realSleep } from './clock.js'

export interface RetryPolicy {
  /** Attempts per piece of work (for the image: across all mirrors), the first included. */
  maxAttempts: number
  /** The exponential's first step: the first retry waits up to this long. */
  baseDelayMs: number
  /** Backoff cap (and cap on an honoured Retry-After). */
  maxDelayMs: number
  /** Shortest backoff (the jitter's floor). Default 0: full jitter. */
  minDelayMs?: number
  /** HTTP statuses that are retried (other 4xx are final). */
  retryStatuses: readonly number[]
  /** Error codes of transient network trouble. */
  retryCodes: readonly string[]
  /** Error code prefixes/names that are final (TLS: a retry cannot fix a certificate). */
  finalCodePrefixes: readonly string[]
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 8,
  baseDelayMs: 250,
  maxDelayMs: 30_000,
  retryStatuses: [408, 425, 429, 500, 502, 503, 504],
  retryCodes: [
    'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH',
    'ENETDOWN', 'EHOSTDOWN', 'ENOTFOUND', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET', 'EIDLE', 'ETRUNCATED', 'EINTEGRITY',
  ],
  finalCodePrefixes: ['ERR_TLS_', 'ERR_SSL_', 'CERT_', 'UNABLE_TO_', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'HOSTNAME_MISMATCH'],
}

/** Error codes along `e` and its causes, outermost first. */
export const errorCodes = (e: unknown): string[] => {
  const out: string[] = []
  for (let cur: unknown = e, depth = 0; cur && depth < 5; depth++) {
    const c = cur as { code?: unknown; errno?: unknown; cause?: unknown }
    if (typeof c.code === 'string' && c.code !== 'system') out.push(c.code)
    else if (typeof c.errno === 'string') out.push(c.errno)
    cur = c.cause
  }
  return out
}

/** Why a request failed, without node-fetch's "request to URL failed, reason: " (the caller names the URL once). */
export const networkReason = (e: unknown): string => messageOf(e).replace(/^request to \S+ failed, reason: /, '')

/** The code of a TLS failure in `e` or its causes (e.g. a certificate nobody trusted: final under any policy), or undefined. */
export const tlsFailureCode = (e: unknown): string | undefined =>
  errorCodes(e).find((code) => DEFAULT_RETRY_POLICY.finalCodePrefixes.some((p) => code.startsWith(p)))

/** Whether the server's answer `status` is worth another attempt under `policy` (other 4xx are final). */
export const isRetryableStatus = (status: number, policy: RetryPolicy = DEFAULT_RETRY_POLICY): boolean => policy.retryStatuses.includes(status)

/** Whether another attempt could succeed. Decided from the error's type and codes (its own and its causes'), never its message. */
export const isRetryable = (e: unknown, policy: RetryPolicy = DEFAULT_RETRY_POLICY): boolean => {
  if (e instanceof HttpError) return isRetryableStatus(e.status, policy)
  if (e instanceof Error && e.name === 'AbortError') return false
  if (e instanceof BootAgentError && e.code === 'EABORT') return false
  const codes = errorCodes(e)
  if (codes.some((code) => policy.finalCodePrefixes.some((p) => code.startsWith(p)))) return false
  return codes.some((code) => policy.retryCodes.includes(code))
}

/**
 * Delay before attempt `attempt` + 1 (1 = the first retry): full jitter
 * between the policy's floor and the capped exponential
 * `baseDelayMs · 2^(attempt−1)`, and never shorter than the server's
 * Retry-After (itself capped at `maxDelayMs`). `random` is injected so a
 * caller can seed the jitter per node.
 */
export const backoffMs = (attempt: number, policy: RetryPolicy, random: () => number = Math.random, retryAfterMs?: number): number => {
  const floor = Math.min(policy.minDelayMs ?? 0, policy.maxDelayMs)
  const cap = Math.max(floor, Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(30, Math.max(0, attempt - 1))))
  const jittered = Math.floor(floor + random() * (cap - floor))
  return retryAfterMs !== undefined ? Math.min(policy.maxDelayMs, Math.max(retryAfterMs, jittered)) : jittered
}

/** `Retry-After` (seconds or HTTP date) in milliseconds, or undefined: the one parser every caller uses. */
export const parseRetryAfter = (value: string | null | undefined, now: number = Date.now()): number | undefined => {
  if (!value) return undefined
  const s = value.trim()
  if (/^\d+$/.test(s)) return Number(s) * 1000
  const t = Date.parse(s)
  return Number.isNaN(t) ? undefined : Math.max(0, t - now)
}

/** The Retry-After carried by a failed request's error ({@link HttpError.retryAfterMs}), if any. */
export const retryAfterOf = (e: unknown): number | undefined => {
  const ms = e instanceof HttpError ? e.retryAfterMs : undefined
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined
}

/** The wait after failure `e` of attempt `attempt` (1 = the first): backoff with jitter, at least the server's Retry-After. */
export const retryDelayMs = (e: unknown, attempt: number, policy: RetryPolicy, random: () => number = Math.random): number =>
  backoffMs(attempt, policy, random, retryAfterOf(e))

/** What {@link retrying} passes to `onRetry` before each wait. */
export interface RetryEvent {
  /** The attempt that failed (1 = the first). */
  attempt: number
  /** How long the loop waits before the next attempt. */
  waitMs: number
  error: unknown
}

export interface RetryingOptions {
  /** Default {@link DEFAULT_RETRY_POLICY}. */
  policy?: RetryPolicy
  /** The jitter's randomness (seed it per node). Default Math.random. */
  random?: () => number
  /** Aborts the wait between attempts (and is checked after each failure). */
  signal?: AbortSignal
  /** Called before each wait (log it). */
  onRetry?: (r: RetryEvent) => void
  /** The wait between attempts. Default the real, abortable {@link realSleep sleep}. */
  sleep?: Sleep
}

/**
 * Runs `fn` (given the attempt number, 1 first) until it resolves, its error
 * is final ({@link isRetryable} false), or `policy.maxAttempts` attempts
 * failed; between attempts it waits {@link retryDelayMs}. Throws the last
 * error as is, or the abort reason once `signal` aborted.
 */
export const retrying = async <T>(fn: (attempt: number) => Promise<T>, opts: RetryingOptions = {}): Promise<T> => {
  const policy = opts.policy ?? DEFAULT_RETRY_POLICY
  const wait = opts.sleep ?? realSleep
  // Bounded: every pass either returns, throws, or counts one more attempt up to maxAttempts.
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt)
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason
      if (attempt >= policy.maxAttempts || !isRetryable(e, policy)) throw e
      const waitMs = retryDelayMs(e, attempt, policy, opts.random)
      opts.onRetry?.({ attempt, waitMs, error: e })
      await wait(waitMs, opts.signal)
    }
  }
}
