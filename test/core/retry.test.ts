import t from 'tap'
import { BootAgentError, HttpError } from '../../agent/core/errors.js'
import { backoffMs, DEFAULT_RETRY_POLICY as P, isRetryable, parseRetryAfter, retrying, retryDelayMs } from '../../agent/core/retry.js'

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

t.test('425 Too Early is retried like 408 and 429', async (t) => {
  t.equal(isRetryable(new HttpError({ status: 425, url: 'u' })), true)
})

t.test('a floor keeps the jittered backoff from reaching zero; without one it is full jitter', async (t) => {
  const floored = { ...P, minDelayMs: 100, baseDelayMs: 200, maxDelayMs: 1000 }
  t.equal(backoffMs(1, floored, () => 0), 100)
  t.equal(backoffMs(1, floored, () => 1), 200)
  t.equal(backoffMs(50, floored, () => 1), 1000, 'capped')
  t.equal(backoffMs(5000, P, () => 0.5), Math.floor(P.maxDelayMs / 2), 'a huge attempt number stays a number')
})

t.test('retryDelayMs takes Retry-After from the HTTP error, capped by the policy', async (t) => {
  t.equal(retryDelayMs(new HttpError({ status: 503, url: 'u', retryAfterMs: 4000 }), 1, P, () => 0), 4000)
  t.equal(retryDelayMs(new HttpError({ status: 503, url: 'u' }), 1, P, () => 0), 0)
  t.equal(retryDelayMs(new HttpError({ status: 429, url: 'u', retryAfterMs: 10 ** 9 }), 1, P, () => 0), P.maxDelayMs)
})

t.test('retrying: retries what the policy retries, up to maxAttempts, waiting the backoff', async (t) => {
  const waits: number[] = []
  let calls = 0
  const v = await retrying(
    async (attempt) => {
      calls++
      if (attempt < 3) throw new HttpError({ status: 503, url: 'u', ...(attempt === 2 ? { retryAfterMs: 2000 } : {}) })
      return 'ok'
    },
    { random: () => 0, sleep: async (ms) => void waits.push(ms) },
  )
  t.equal(v, 'ok')
  t.equal(calls, 3)
  t.same(waits, [0, 2000], 'full jitter (random 0), then the Retry-After')

  calls = 0
  await t.rejects(retrying(async () => (calls++, Promise.reject(new HttpError({ status: 500, url: 'u' }))), { policy: { ...P, maxAttempts: 4 }, sleep: async () => {} }), { code: 'EHTTP', status: 500 })
  t.equal(calls, 4, 'bounded by maxAttempts')

  calls = 0
  await t.rejects(retrying(async () => (calls++, Promise.reject(new HttpError({ status: 404, url: 'u' }))), { sleep: async () => {} }), { code: 'EHTTP', status: 404 })
  t.equal(calls, 1, 'a final error is not retried')
})

t.test('retrying: an abort ends it with the abort reason, not another attempt', async (t) => {
  const ac = new AbortController()
  const why = new Error('stopped')
  let calls = 0
  const p = retrying(
    async () => {
      calls++
      ac.abort(why)
      throw sysErr('ECONNRESET')
    },
    { signal: ac.signal, sleep: async () => {} },
  )
  await t.rejects(p, why)
  t.equal(calls, 1)
})
