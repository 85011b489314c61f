import t from 'tap'
import { BootAgentError, HttpError } from '../../agent/errors.js'
import { backoffMs, DEFAULT_RETRY_POLICY as P, isRetryable, parseRetryAfter } from '../../agent/core/retry.js'

const sysErr = (code: string) => Object.assign(new Error(code), { code })

t.test('4xx are final except 408 and 429; 5xx are retried', async (t) => {
  for (const s of [400, 401, 403, 404, 410, 416]) t.equal(isRetryable(new HttpError({ status: s, url: 'u' })), false, `${s}`)
  for (const s of [408, 429, 500, 502, 503, 504]) t.equal(isRetryable(new HttpError({ status: s, url: 'u' })), true, `${s}`)
})

t.test('transient network errors are retried; TLS errors and aborts are not', async (t) => {
  for (const c of ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'ETRUNCATED', 'EIDLE']) t.equal(isRetryable(sysErr(c)), true, c)
  for (const c of ['ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT']) t.equal(isRetryable(sysErr(c)), false, c)
  t.equal(isRetryable(new BootAgentError('EABORT', 'stop')), false)
  t.equal(isRetryable(Object.assign(new Error('x'), { name: 'AbortError' })), false)
  t.equal(isRetryable(new Error('no code')), false, 'unknown errors are not guessed at')
  t.equal(isRetryable(new BootAgentError('ENETWORK', 'wrapped', {}, { cause: sysErr('ECONNRESET') })), true, 'the cause chain is read')
})

t.test('backoff is capped exponential with full jitter, and never shorter than Retry-After', async (t) => {
  const max = () => 0.999999
  t.equal(backoffMs(1, P, () => 0), 0)
  t.ok(backoffMs(1, P, max) < P.baseDelayMs)
  t.ok(backoffMs(3, P, max) < P.baseDelayMs * 4 && backoffMs(3, P, max) >= P.baseDelayMs * 2)
  t.ok(backoffMs(40, P, max) <= P.maxDelayMs, 'capped')
  t.equal(backoffMs(1, P, () => 0, 5000), 5000, 'Retry-After honoured')
  t.equal(backoffMs(1, P, () => 0, 10 * P.maxDelayMs), P.maxDelayMs, 'an absurd Retry-After is capped')
})

t.test('Retry-After is read as seconds or an HTTP date', async (t) => {
  t.equal(parseRetryAfter('3'), 3000)
  t.equal(parseRetryAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2030, 0, 1)), 10_000)
  t.equal(parseRetryAfter('soon'), undefined)
  t.equal(parseRetryAfter(null), undefined)
})
