/**
 * HTTP for the downloader, through node-fetch (keep-alive agents), with two
 * deadlines on every request: to get the response headers, and between two
 * pieces of body (a stalled server must not hang a boot).
 */
import fetch, { type Response } from 'node-fetch'
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import { BootAgentError, HttpError, foreignCode } from '../core/errors.js'
import { parseRetryAfter } from '../core/retry.js'
import { agentFor, failedRequestMessage } from './trust.js'
import { authHeaders, type HeadBearer } from '../core/head-token.js'
import { nodeHeaders } from '../protocol/node-header.js'

/** Longest wait for response headers. */
export const HEADERS_TIMEOUT_MS = 30_000
/** Longest silence between two pieces of body. */
export const IDLE_TIMEOUT_MS = 30_000

export interface RequestOptions {
  /**
   * Ask for a gzip transfer of a whole (unranged) body (manifests: JSON of
   * hex digests, about half the bytes on the wire); {@link getBytes} inflates
   * it, bounded by its limit. Image bytes are never asked for this way.
   */
  acceptGzip?: boolean
  signal?: AbortSignal
  headersTimeoutMs?: number
  idleTimeoutMs?: number
  /** This node's token for the head: sent only to the head's own origin (authHeaders), never to a mirror. */
  bearer?: HeadBearer
  /** This node's id, sent as `X-Boot-Agent-Node` when it is a safe name (protocol/node-header.ts). */
  nodeId?: string
}

/** What a response says about its body. */
export interface BodyMeta {
  url: string
  status: number
  /** True for a 206 answering our Range; false when the server sent the whole file (200). */
  ranged: boolean
  /** Offset of the first body byte in the file. */
  start: number
  /** Content-Length when given. */
  length: number | undefined
  /** Size of the whole file when the server said (Content-Range total, or Content-Length of a 200). */
  total: number | undefined
  /** The answer's `Content-Encoding` when not identity (only ever asked for with `acceptGzip`). */
  encoding?: string
}

export interface BodyStream extends BodyMeta {
  /** The body in pieces; throws EIDLE on a stall, the abort reason on abort. */
  pieces: AsyncIterable<Uint8Array>
  /** Stops reading and frees the connection. */
  cancel(): void
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/

/**
 * The error for an answer other than 200/206, carrying the server's
 * `Retry-After` and, when the server said why (`said`: see
 * {@link problemText}), its words: `HTTP 404 from URL: no manifest for image doc`.
 */
export const statusError = (status: number, retryAfter: string | null | undefined, url: string, said?: string): HttpError => {
  const retryAfterMs = parseRetryAfter(retryAfter ?? null)
  return new HttpError({ status, url, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}), ...(said ? { message: `HTTP ${status} from ${url}: ${said}` } : {}) })
}

/** The most of an error body read for its message. */
const PROBLEM_BODY_BYTES = 4096
/** The longest server message carried into an error. */
const PROBLEM_MESSAGE_CHARS = 300

/**
 * The reason an error answer gives, for the error message: the head's
 * `{"error": {"message"}}` (docs/protocol.md), or a short plain-text body,
 * on one printable line; undefined for anything else (an HTML error page).
 */
export const problemText = (contentType: string | null, body: string): string | undefined => {
  let text: string | undefined
  if (/^application\/(problem\+)?json\b/i.test(contentType ?? '')) {
    try {
      const v = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown }
      const m = typeof v.error === 'object' ? v.error?.message : v.error ?? v.message
      if (typeof m === 'string') text = m
    } catch {
      text = undefined
    }
  } else if (/^text\/plain\b/i.test(contentType ?? '')) text = body
  if (!text) return undefined
  // eslint-disable-next-line no-control-regex
  const line = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim()
  return line ? (line.length > PROBLEM_MESSAGE_CHARS ? `${line.slice(0, PROBLEM_MESSAGE_CHARS)}…` : line) : undefined
}

/** Up to {@link PROBLEM_BODY_BYTES} of an error answer's body, then the rest dropped; '' when it cannot be read. */
const readProblemBody = async (res: Response): Promise<string> => {
  const parts: Buffer[] = []
  let n = 0
  try {
    for await (const p of (res.body ?? []) as AsyncIterable<Buffer>) {
      parts.push(p)
      n += p.length
      if (n >= PROBLEM_BODY_BYTES) break
    }
  } catch {
    // a body cut short says nothing more
  }
  return Buffer.concat(parts).subarray(0, PROBLEM_BODY_BYTES).toString('utf8')
}

/**
 * Checks a 206's `Content-Range` against the range asked for (and, when
 * given, its `Content-Length`); returns where the body starts and the whole
 * file's size when the server said. ERANGE otherwise.
 */
export const partialContent = (
  url: string,
  range: { start: number; end: number } | undefined,
  contentRange: string | null | undefined,
  length?: number,
): { start: number; total: number | undefined } => {
  const m = CONTENT_RANGE.exec(contentRange ?? '')
  if (!range || !m || Number(m[1]) !== range.start || Number(m[2]) !== range.end - 1 || (length !== undefined && length !== range.end - range.start)) {
    throw new BootAgentError('ERANGE', `${url} answered Range ${range ? `bytes=${range.start}-${range.end - 1}` : '(none)'} with Content-Range ${JSON.stringify(contentRange ?? null)}`, { url })
  }
  return { start: range.start, total: m[3] === '*' ? undefined : Number(m[3]) }
}

/**
 * GET `url`, asking for bytes [start, end) when a range is given. A 200 to
 * a ranged request means the server ignores Range: the caller gets the whole
 * body (`ranged: false`, `start: 0`) and decides.
 */
export const openBody = async (url: string, range: { start: number; end: number } | undefined, opts: RequestOptions = {}): Promise<BodyStream> => {
  const ctl = new AbortController()
  let why: 'headers' | 'idle' | undefined
  const onOuter = () => ctl.abort(opts.signal?.reason)
  if (opts.signal?.aborted) throw opts.signal.reason
  opts.signal?.addEventListener('abort', onOuter, { once: true })
  const timer = setTimeout(() => {
    why = 'headers'
    ctl.abort()
  }, opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS)
  const done = () => {
    clearTimeout(timer)
    opts.signal?.removeEventListener('abort', onOuter)
  }
  const translate = (e: unknown): unknown => {
    if (opts.signal?.aborted) return opts.signal.reason
    if (why === 'headers') return new BootAgentError('EIDLE', `no response from ${url} within ${opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS} ms`, { url })
    if (why === 'idle') return new BootAgentError('EIDLE', `${url} sent nothing for ${opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS} ms`, { url })
    if (e instanceof Error && !(e instanceof BootAgentError)) {
      const code = (e as { code?: unknown }).code
      return new BootAgentError(typeof code === 'string' && code !== 'system' ? foreignCode(code) : 'ENETWORK', failedRequestMessage(url, e), { url }, { cause: e })
    }
    return e
  }
  let res: Response
  try {
    const u = new URL(url)
    res = await fetch(url, {
      signal: ctl.signal,
      agent: agentFor(u),
      compress: false, // byte ranges of the file itself, never a transfer encoding of it
      // node-fetch drops Authorization on a redirect to another host (a head's 302 to a mirror).
      headers: { ...(range ? { range: `bytes=${range.start}-${range.end - 1}` } : {}), 'accept-encoding': range || !opts.acceptGzip ? 'identity' : 'gzip', ...authHeaders(url, opts.bearer), ...nodeHeaders(opts.nodeId) },
    })
  } catch (e) {
    done()
    throw translate(e)
  }
  if (res.status !== 200 && res.status !== 206) {
    // Read while the headers deadline still runs: a server that stalls in its error body is cut off.
    const said = problemText(res.headers.get('content-type'), await readProblemBody(res))
    done()
    res.body?.resume?.()
    throw statusError(res.status, res.headers.get('retry-after'), url, said)
  }
  let start = 0
  let total: number | undefined
  if (res.status === 206) {
    try {
      ;({ start, total } = partialContent(url, range, res.headers.get('content-range')))
    } catch (e) {
      done()
      ctl.abort()
      throw e
    }
  }
  clearTimeout(timer)
  const lenHeader = res.headers.get('content-length')
  const encoding = res.headers.get('content-encoding')?.trim().toLowerCase()
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS
  const body = res.body
  // The stall watchdog, from the first read. Cleared when the body ends and by
  // cancel(): a caller that stops reading at the byte it wanted never resumes
  // the generator, and a live timer would hold the process for IDLE_TIMEOUT_MS.
  let idle: NodeJS.Timeout | undefined
  async function* pieces(): AsyncGenerator<Uint8Array> {
    idle = setTimeout(() => {
      why = 'idle'
      ctl.abort()
    }, idleMs)
    try {
      if (!body) return
      for await (const piece of body as AsyncIterable<Uint8Array>) {
        idle.refresh()
        yield piece
      }
    } catch (e) {
      throw translate(e)
    } finally {
      clearTimeout(idle)
      done()
    }
  }
  return {
    url,
    status: res.status,
    ranged: res.status === 206,
    start,
    length: lenHeader !== null && /^\d+$/.test(lenHeader) ? Number(lenHeader) : undefined,
    total: res.status === 206 ? total : lenHeader !== null && /^\d+$/.test(lenHeader) && !encoding ? Number(lenHeader) : undefined,
    ...(encoding && encoding !== 'identity' ? { encoding } : {}),
    pieces: pieces(),
    cancel: () => {
      clearTimeout(idle)
      done()
      ctl.abort()
    },
  }
}

/** A small whole body (a manifest), refusing more than `maxBytes`. */
export const getBytes = async (url: string, maxBytes: number, opts: RequestOptions = {}): Promise<Buffer> => {
  const b = await openBody(url, undefined, opts)
  const parts: Uint8Array[] = []
  let n = 0
  for await (const p of b.pieces) {
    n += p.length
    if (n > maxBytes) {
      b.cancel()
      throw new BootAgentError('ETOOLARGE', `${url} is larger than ${maxBytes} bytes`, { url, maxBytes })
    }
    parts.push(p)
  }
  if (b.length !== undefined && n !== b.length) throw new BootAgentError('ETRUNCATED', `${url}: got ${n} of ${b.length} bytes`, { url })
  if (b.encoding === undefined) return Buffer.concat(parts)
  if (b.encoding !== 'gzip' || !opts.acceptGzip) throw new BootAgentError('EHTTP', `${url} answered with Content-Encoding ${b.encoding}, which was not asked for`, { url })
  try {
    return await gunzipAsync(Buffer.concat(parts), { maxOutputLength: maxBytes })
  } catch (e) {
    if ((e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') throw new BootAgentError('ETOOLARGE', `${url} inflates to more than ${maxBytes} bytes`, { url, maxBytes })
    // A body cut or damaged on the way: retried like a short one.
    throw new BootAgentError('ETRUNCATED', `${url}: its gzip body does not inflate (${(e as Error).message})`, { url }, { cause: e })
  }
}

const gunzipAsync = promisify(gunzip)

/**
 * The body as `read(into)` calls (copying each piece into the caller's
 * buffer, keeping what does not fit for the next call), the shape
 * direct-http.ts reads in; 0 at the end.
 */
export const pieceReader = (b: BodyStream): ((into: Uint8Array) => Promise<number>) => {
  const it = b.pieces[Symbol.asyncIterator]()
  let rest: Uint8Array | undefined
  return async (into) => {
    if (!rest?.length) {
      const r = await it.next()
      if (r.done) return 0
      rest = r.value
    }
    const n = Math.min(into.length, rest.length)
    into.set(rest.subarray(0, n))
    rest = rest.subarray(n)
    return n
  }
}
