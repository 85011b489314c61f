/**
 * The other measured undici variant: `directGet` over undici's lowest public
 * layer, `Agent.dispatch` with a handler (no Readable stream between the
 * parser and the reader: each parsed body piece is handed to `read` or kept,
 * and the socket paused past MAX_AHEAD_BYTES, as direct-http.ts does). Same
 * signature and `DirectBody` as agent/transport/direct-http.ts; bundled in
 * its place by bench/http-client.ts. Not part of the agent.
 */
import type { Dispatcher } from 'undici'
import type { DirectBody } from '../../agent/transport/direct-http.js'
import type { RequestOptions } from '../../agent/transport/http.js'
import { agent, judgeHead, MAX_AHEAD_BYTES, requestFor, shortBody, translate } from './undici-common.js'

export { closeIdleConnections } from './undici-common.js'

/** {@link import('../../agent/transport/direct-http.js').directGet} over undici's `dispatch`. */
export const directGet = (url: string, range: { start: number; end: number } | undefined, opts: RequestOptions = {}): Promise<DirectBody | undefined> => {
  const req = requestFor(url, range, opts)
  if (!req) return Promise.resolve(undefined)
  if (opts.signal?.aborted) return Promise.reject(opts.signal.reason)
  const { idleMs, headersMs } = req
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
    /** Hands the first bytes ahead to `into`; resumes the socket once there is room. */
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
    const body = (): DirectBody['read'] => (into) => {
      if (aheadBytes > 0) return Promise.resolve(deliver(into))
      if (error !== undefined) return Promise.reject(error)
      if (unread <= 0 || into.length === 0) return Promise.resolve(0)
      if (complete) return Promise.reject(shortBody(url, unread))
      return new Promise((resolve, reject) => (waiting = { into, resolve, reject }))
    }
    const handler: Dispatcher.DispatchHandlers = {
      onConnect: (a) => {
        abort = a
      },
      onHeaders: (status, raw, res) => {
        resume = res
        headDone = true
        const headers = new Map<string, string>()
        for (let i = 0; i + 1 < raw.length; i += 2) {
          const k = raw[i]!.toString('latin1').toLowerCase()
          const prev = headers.get(k)
          headers.set(k, prev === undefined ? raw[i + 1]!.toString('latin1') : `${prev}, ${raw[i + 1]!.toString('latin1')}`)
        }
        let meta
        try {
          meta = judgeHead(url, range, status, (name) => headers.get(name))
        } catch (e) {
          rejectHead(e)
        }
        if (!meta) {
          cleanup()
          abort?.(new Error('declined'))
          resolveHead(undefined) // (a no-op after a rejection)
          return false
        }
        unread = meta.length ?? 0
        resolveHead({
          ...meta,
          read: body(),
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
        if (w && unread > 0) w.reject(shortBody(url, unread))
        else w?.resolve(0)
      },
      onError: (e) => fail(e),
    }
    agent.dispatch(req.dispatch, handler)
  })
}
