/**
 * Retry policy as plain data (after undici's RetryHandler): which statuses
 * and errno codes are worth another attempt, capped exponential backoff with
 * full jitter, and the server's `Retry-After` honoured.
 */
import { BootAgentError, HttpError, messageOf } from '../errors.js'

export interface RetryPolicy {
  /** Attempts per piece of work, across all mirrors. */
  maxAttempts: number
  /** First backoff step. */
  baseDelayMs: number
  /** Backoff cap (and cap on an honoured Retry-After). */
  maxDelayMs: number
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

/** Whether another attempt could succeed. Decided from the error's type and codes (its own and its causes'), never its message. */
export const isRetryable = (e: unknown, policy: RetryPolicy = DEFAULT_RETRY_POLICY): boolean => {
  if (e instanceof HttpError) return policy.retryStatuses.includes(e.status)
  if (e instanceof Error && e.name === 'AbortError') return false
  if (e instanceof BootAgentError && e.code === 'EABORT') return false
  const codes = errorCodes(e)
  if (codes.some((code) => policy.finalCodePrefixes.some((p) => code.startsWith(p)))) return false
  return codes.some((code) => policy.retryCodes.includes(code))
}

/** Delay before attempt `attempt` (1 = first retry): full jitter over the capped exponential, at least Retry-After. */
export const backoffMs = (attempt: number, policy: RetryPolicy, random: () => number = Math.random, retryAfterMs?: number): number => {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1))
  const jittered = Math.floor(random() * cap)
  return retryAfterMs !== undefined ? Math.min(policy.maxDelayMs, Math.max(retryAfterMs, jittered)) : jittered
}

/** `Retry-After` (seconds or HTTP date) in milliseconds, or undefined. */
export const parseRetryAfter = (value: string | null, now: number = Date.now()): number | undefined => {
  if (!value) return undefined
  const s = value.trim()
  if (/^\d+$/.test(s)) return Number(s) * 1000
  const t = Date.parse(s)
  return Number.isNaN(t) ? undefined : Math.max(0, t - now)
}

/** Abortable sleep. */
export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(t)
      reject(signal?.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
