/**
 * What the two undici stand-ins for agent/transport/direct-http.ts share:
 * the pooled Agent, the request, direct-http's decision on a response head,
 * and the translation of undici's errors into the agent's codes.
 */
import { Agent, type Dispatcher } from 'undici'
import { BootAgentError, foreignCode } from '../../agent/core/errors.js'
import { HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS, partialContent, statusError, type BodyMeta, type RequestOptions } from '../../agent/transport/http.js'

/** Idle connections kept per origin, and for how long (direct-http.ts's pool). */
const POOL_PER_ORIGIN = 4
const POOL_IDLE_MS = 30_000
/** Body bytes received ahead of the reader before the socket is paused (direct-http.ts: 1 MiB). */
export const MAX_AHEAD_BYTES = 1024 * 1024

/** The keep-alive pool every request goes through. */
export const agent = new Agent({ connections: POOL_PER_ORIGIN, keepAliveTimeout: POOL_IDLE_MS, keepAliveMaxTimeout: POOL_IDLE_MS })

/** Closes every idle pooled connection (tests, shutdown). */
export const closeIdleConnections = (): void => void agent.close().catch(() => undefined)

/** A request for undici, with direct-http's headers and deadlines; undefined where direct-http declines the URL. */
export const requestFor = (
  url: string,
  range: { start: number; end: number } | undefined,
  opts: RequestOptions,
): { dispatch: Dispatcher.DispatchOptions; idleMs: number; headersMs: number } | undefined => {
  const u = new URL(url)
  if (u.protocol !== 'http:' || u.username || u.password) return undefined
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS
  const headersMs = opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS
  const dispatch: Dispatcher.DispatchOptions = {
    origin: u.origin,
    path: `${u.pathname}${u.search}`,
    method: 'GET',
    headers: { 'user-agent': 'boot-agent', 'accept-encoding': 'identity', ...(range ? { range: `bytes=${range.start}-${range.end - 1}` } : {}) },
    headersTimeout: headersMs,
    bodyTimeout: idleMs,
  }
  return { dispatch, idleMs, headersMs }
}

/**
 * direct-http's decision on a response head: the body's metadata, undefined
 * when node-fetch should take the answer (a redirect, no Content-Length, a
 * Transfer-Encoding), or the error (another status, a wrong Content-Range).
 */
export const judgeHead = (url: string, range: { start: number; end: number } | undefined, status: number, header: (name: string) => string | undefined): BodyMeta | undefined => {
  if (status !== 200 && status !== 206) {
    if (status >= 300 && status < 400) return undefined
    throw statusError(status, header('retry-after'), url)
  }
  const lenHeader = header('content-length')
  if (header('transfer-encoding') !== undefined || lenHeader === undefined || !/^\d{1,16}$/.test(lenHeader)) return undefined
  const length = Number(lenHeader)
  const { start, total } = status === 206 ? partialContent(url, range, header('content-range'), length) : { start: 0, total: length }
  return { url, status, ranged: status === 206, start, length, total }
}

/** The agent's error for one of undici's. */
export const translate = (e: unknown, url: string, idleMs: number, headersMs: number): unknown => {
  if (e instanceof BootAgentError) return e
  const code = (e as { code?: unknown })?.code
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return new BootAgentError('EIDLE', `no response from ${url} within ${headersMs} ms`, { url }, { cause: e })
  if (code === 'UND_ERR_BODY_TIMEOUT') return new BootAgentError('EIDLE', `${url} sent nothing for ${idleMs} ms`, { url }, { cause: e })
  if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return new BootAgentError('ETRUNCATED', `${url}: connection closed before the whole body`, { url }, { cause: e })
  if (code === 'UND_ERR_SOCKET') return new BootAgentError('ECONNRESET', `${url}: ${(e as Error).message}`, { url }, { cause: e })
  return new BootAgentError(typeof code === 'string' ? foreignCode(code) : 'ENETWORK', `${url}: ${(e as Error)?.message ?? String(e)}`, { url }, { cause: e })
}

/** The error for a body that ended with `unread` bytes still to come. */
export const shortBody = (url: string, unread: number): BootAgentError =>
  new BootAgentError('ETRUNCATED', `${url}: connection closed with ${unread} byte(s) of the body still to come`, { url })
