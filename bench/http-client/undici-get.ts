/**
 * The measured alternative to agent/transport/direct-http.ts: the same
 * `directGet` (same signature, same `DirectBody`, same errors where undici
 * lets us tell them apart) over undici's `request` with a keep-alive Agent,
 * its body a Readable read piece by piece. bench/http-client.ts bundles the
 * agent with this file in place of direct-http.ts and times both on the same
 * download. Not part of the agent.
 */
import type { Dispatcher } from 'undici'
import type { DirectBody } from '../../agent/transport/direct-http.js'
import type { RequestOptions } from '../../agent/transport/http.js'
import { agent, judgeHead, MAX_AHEAD_BYTES, requestFor, shortBody, translate } from './undici-common.js'

export { closeIdleConnections } from './undici-common.js'

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v)

/** {@link import('../../agent/transport/direct-http.js').directGet} over undici's `request`. */
export const directGet = async (url: string, range: { start: number; end: number } | undefined, opts: RequestOptions = {}): Promise<DirectBody | undefined> => {
  const req = requestFor(url, range, opts)
  if (!req) return undefined
  if (opts.signal?.aborted) throw opts.signal.reason
  const { idleMs, headersMs } = req
  let res: Dispatcher.ResponseData
  try {
    res = await agent.request({ ...req.dispatch, highWaterMark: MAX_AHEAD_BYTES, ...(opts.signal ? { signal: opts.signal } : {}) })
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason
    throw translate(e, url, idleMs, headersMs)
  }
  const { body } = res
  let meta
  try {
    meta = judgeHead(url, range, res.statusCode, (name) => one(res.headers[name]))
  } finally {
    if (!meta) body.destroy()
  }
  if (!meta) return undefined
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  let left: Buffer | undefined
  let unread = meta.length ?? 0
  return {
    ...meta,
    read: async (into) => {
      if (unread <= 0 || into.length === 0) return 0
      if (!left?.length) {
        try {
          const r = await it.next()
          if (r.done) throw shortBody(url, unread)
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
