/**
 * The other measured undici variant: `directGet` over undici's lowest public
 * layer, `Agent.dispatch` with a handler (no Readable stream between the
 * parser and the reader: each parsed body piece is handed to `read` or kept,
 * and the socket paused past 1 MiB ahead, as direct-http.ts does). Same
 * signature and `DirectBody` as agent/transport/direct-http.ts; bundled in
 * its place by bench/http-client.ts. Not part of the agent.
 */
import { Agent, type Dispatcher } from 'undici'
import { BootAgentError } from '../../agent/errors.js'
import { HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS, partialContent, statusError, type RequestOptions } from '../../agent/transport/http.js'
import type { DirectBody } from '../../agent/transport/direct-http.js'

const POOL_PER_ORIGIN = 4
const POOL_IDLE_MS = 30_000
/** Received body bytes not yet read beyond which the socket is paused (direct-http.ts's MAX_AHEAD_BYTES). */
const MAX_AHEAD_BYTES = 1024 * 1024

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

/** {@link import('../../agent/transport/direct-http.js').directGet} over undici's dispatch. */
export const directGet = (url: string, range: { start: number; end: number } | undefined, opts: RequestOptions = {}): Promise<DirectBody | undefined> => {
  const u = new URL(url)
  if (u.protocol !== 'http:' || u.username || u.password) return Promise.resolve(undefined)
  if (opts.signal?.aborted) return Promise.reject(opts.signal.reason)
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS
  const headersMs = opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS
  return new Promise((resolveHead, rejectHead) => {
    let headDone = false
    let abort: ((e?: Error) => void) | undefined
    let resume: (() => void) | undefined
    const ahead: Buffer[] = []
    let aheadBytes = 0
    let unread = 0
    let complete = false
    let error: unknown
    let waiting: { into: Uint8Array; resolve: (n: number) => void; reject: (e: unknown) => void } | undefined
    const onAbort = () => abort?.(opts.signal?.reason)
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    const cleanup = () => opts.signal?.removeEventListener('abort', onAbort)
    const deliver = (into: Uint8Array): number => {
      let k = 0
      while (ahead.length && k < into.length) {
        const v = ahead[0]!
        const take = Math.min(v.length, into.length - k)
        into.set(take === v.length ? v : v.subarray(0, take), k)
        k += take
        if (take === v.length) ahead.shift()
        else ahead[0] = v.subarray(take)
      }
      aheadBytes -= k
      unread -= k
      if (aheadBytes < MAX_AHEAD_BYTES) resume?.()
      return k
    }
    const fail = (e: unknown) => {
      const why = opts.signal?.aborted ? opts.signal.reason : translate(e, url, idleMs, headersMs)
      cleanup()
      if (!headDone) {
        headDone = true
        rejectHead(why)
        return
      }
      error ??= why
      const w = waiting
      waiting = undefined
      w?.reject(error)
    }
    const handler: Dispatcher.DispatchHandlers = {
      onConnect: (a) => {
        abort = a
      },
      onHeaders: (status, raw, res) => {
        resume = res
        const headers = new Map<string, string>()
        for (let i = 0; i + 1 < raw.length; i += 2) {
          const k = raw[i]!.toString('latin1').toLowerCase()
          const v = raw[i + 1]!.toString('latin1')
          const prev = headers.get(k)
          headers.set(k, prev === undefined ? v : `${prev}, ${v}`)
        }
        headDone = true
        const decline = (e?: unknown) => {
          cleanup()
          abort?.(new Error('declined'))
          if (e) rejectHead(e)
          else resolveHead(undefined)
          return false
        }
        if (status !== 200 && status !== 206) return decline(status >= 300 && status < 400 ? undefined : statusError(status, headers.get('retry-after'), url))
        const lenHeader = headers.get('content-length')
        if (headers.has('transfer-encoding') || lenHeader === undefined || !/^\d{1,16}$/.test(lenHeader)) return decline()
        const length = Number(lenHeader)
        let start = 0
        let total: number | undefined = status === 200 ? length : undefined
        if (status === 206) {
          try {
            ;({ start, total } = partialContent(url, range, headers.get('content-range'), length))
          } catch (e) {
            return decline(e)
          }
        }
        unread = length
        resolveHead({
          url,
          status,
          ranged: status === 206,
          start,
          length,
          total,
          read: (into) => {
            if (aheadBytes > 0) return Promise.resolve(deliver(into))
            if (error !== undefined) return Promise.reject(error)
            if (unread <= 0 || into.length === 0) return Promise.resolve(0)
            if (complete) return Promise.reject(new BootAgentError('ETRUNCATED', `${url}: connection closed with ${unread} byte(s) of the body still to come`, { url }))
            return new Promise((resolve, reject) => (waiting = { into, resolve, reject }))
          },
          cancel: () => {
            cleanup()
            if (!complete) abort?.(new Error('cancelled'))
          },
        })
        return true
      },
      onData: (chunk) => {
        ahead.push(chunk)
        aheadBytes += chunk.length
        const w = waiting
        if (w) {
          waiting = undefined
          w.resolve(deliver(w.into))
        }
        return aheadBytes < MAX_AHEAD_BYTES
      },
      onComplete: () => {
        complete = true
        cleanup()
        const w = waiting
        waiting = undefined
        if (w) {
          if (unread > 0) w.reject(new BootAgentError('ETRUNCATED', `${url}: connection closed with ${unread} byte(s) of the body still to come`, { url }))
          else w.resolve(0)
        }
      },
      onError: (e) => fail(e),
    }
    agent.dispatch(
      {
        origin: u.origin,
        path: `${u.pathname}${u.search}`,
        method: 'GET',
        headers: { 'user-agent': 'boot-agent', 'accept-encoding': 'identity', ...(range ? { range: `bytes=${range.start}-${range.end - 1}` } : {}) },
        headersTimeout: headersMs,
        bodyTimeout: idleMs,
      },
      handler,
    )
  })
}
