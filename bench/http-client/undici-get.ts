/**
 * The measured alternative to agent/transport/direct-http.ts: the same
 * `directGet` (same signature, same `DirectBody`, same errors where undici
 * lets us tell them apart) over undici's `request` with a keep-alive Agent.
 * bench/http-client.ts bundles the agent with this file in place of
 * direct-http.ts and times both on the same download. Not part of the agent.
 */
import { Agent, type Dispatcher } from 'undici'
import { BootAgentError } from '../../agent/errors.js'
import { HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS, partialContent, statusError, type RequestOptions } from '../../agent/transport/http.js'
import type { DirectBody } from '../../agent/transport/direct-http.js'

/** Idle connections kept per origin, and for how long (direct-http.ts's pool). */
const POOL_PER_ORIGIN = 4
const POOL_IDLE_MS = 30_000
/** Body bytes undici buffers ahead of the reader before it pauses the socket (direct-http.ts: 1 MiB). */
const AHEAD_BYTES = 1024 * 1024

const agent = new Agent({ connections: POOL_PER_ORIGIN, keepAliveTimeout: POOL_IDLE_MS, keepAliveMaxTimeout: POOL_IDLE_MS })

/** Closes every idle pooled connection (tests, shutdown). */
export const closeIdleConnections = (): void => void agent.close().catch(() => undefined)

const translate = (e: unknown, url: string, idleMs: number, headersMs: number): unknown => {
  if (e instanceof BootAgentError) return e
  const code = (e as { code?: unknown })?.code
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return new BootAgentError('EIDLE', `no response from ${url} within ${headersMs} ms`, { url }, { cause: e })
  if (code === 'UND_ERR_BODY_TIMEOUT') return new BootAgentError('EIDLE', `${url} sent nothing for ${idleMs} ms`, { url }, { cause: e })
  if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return new BootAgentError('ETRUNCATED', `${url}: connection closed before the whole body`, { url }, { cause: e })
  if (code === 'UND_ERR_SOCKET') return new BootAgentError('ECONNRESET', `${url}: ${(e as Error).message}`, { url }, { cause: e })
  return new BootAgentError(typeof code === 'string' ? code : 'ENETWORK', `${url}: ${(e as Error)?.message ?? String(e)}`, { url }, { cause: e })
}

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v)

/** {@link import('../../agent/transport/direct-http.js').directGet} over undici. */
export const directGet = async (url: string, range: { start: number; end: number } | undefined, opts: RequestOptions = {}): Promise<DirectBody | undefined> => {
  const u = new URL(url)
  if (u.protocol !== 'http:' || u.username || u.password) return undefined
  if (opts.signal?.aborted) throw opts.signal.reason
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS
  const headersMs = opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS
  let res: Dispatcher.ResponseData
  try {
    res = await agent.request({
      origin: u.origin,
      path: `${u.pathname}${u.search}`,
      method: 'GET',
      headers: { 'user-agent': 'boot-agent', 'accept-encoding': 'identity', ...(range ? { range: `bytes=${range.start}-${range.end - 1}` } : {}) },
      headersTimeout: headersMs,
      bodyTimeout: idleMs,
      highWaterMark: AHEAD_BYTES,
      ...(opts.signal ? { signal: opts.signal } : {}),
    })
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason
    throw translate(e, url, idleMs, headersMs)
  }
  const { statusCode: status, headers, body } = res
  const giveUp = (): undefined => {
    body.destroy()
    return undefined
  }
  if (status !== 200 && status !== 206) {
    body.destroy()
    if (status >= 300 && status < 400) return undefined // node-fetch follows redirects
    throw statusError(status, one(headers['retry-after']), url)
  }
  const lenHeader = one(headers['content-length'])
  if (headers['transfer-encoding'] !== undefined || lenHeader === undefined || !/^\d{1,16}$/.test(lenHeader)) return giveUp()
  const length = Number(lenHeader)
  let start = 0
  let total: number | undefined = status === 200 ? length : undefined
  if (status === 206) {
    try {
      ;({ start, total } = partialContent(url, range, one(headers['content-range']), length))
    } catch (e) {
      body.destroy()
      throw e
    }
  }
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  let left: Buffer | undefined
  let unread = length
  return {
    url,
    status,
    ranged: status === 206,
    start,
    length,
    total,
    read: async (into) => {
      if (unread <= 0 || into.length === 0) return 0
      if (!left?.length) {
        try {
          const r = await it.next()
          if (r.done) throw new BootAgentError('ETRUNCATED', `${url}: connection closed with ${unread} byte(s) of the body still to come`, { url })
          left = r.value
        } catch (e) {
          body.destroy()
          if (opts.signal?.aborted) throw opts.signal.reason
          throw translate(e, url, idleMs, headersMs)
        }
      }
      const n = Math.min(into.length, left.length)
      into.set(n === left.length ? left : left.subarray(0, n))
      left = left.subarray(n)
      unread -= n
      return n
    },
    cancel: () => {
      if (unread > 0) body.destroy()
    },
  }
}
