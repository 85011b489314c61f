/**
 * Small HTTP helpers for the head node (plain node:http, no framework):
 * JSON answers, problem answers that name what was wrong, and a body reader
 * with a hard size limit.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

/**
 * An answer other than success, thrown by a handler and turned into
 * `{error: {status, code, message, ...details}}` by the server.
 */
export class HttpProblem extends Error {
  readonly status: number
  readonly code: string
  readonly details: Record<string, unknown>
  readonly headers: Record<string, string>
  constructor(status: number, code: string, message: string, opts: { details?: Record<string, unknown>; headers?: Record<string, string> } = {}) {
    super(message)
    this.name = 'HttpProblem'
    this.status = status
    this.code = code
    this.details = opts.details ?? {}
    this.headers = opts.headers ?? {}
  }
}

export const sendJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): number => {
  const text = JSON.stringify(body) + '\n'
  const bytes = Buffer.byteLength(text)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(bytes),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(text)
  return bytes
}

export const sendProblem = (res: ServerResponse, p: HttpProblem): number =>
  sendJson(res, p.status, { error: { status: p.status, code: p.code, message: p.message, ...p.details } }, p.headers)

/**
 * Reads a request body of at most `maxBytes`. A declared `Content-Length`
 * above the limit is refused before any byte is read; a body that grows past
 * it while streaming is refused as soon as it does (413 either way).
 */
export const readBody = (req: IncomingMessage, maxBytes: number): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) > maxBytes) {
      reject(new HttpProblem(413, 'ETOOLARGE', `request body of ${declared} bytes is over the limit of ${maxBytes} bytes`, { details: { limit: maxBytes } }))
      return
    }
    const parts: Buffer[] = []
    let size = 0
    let done = false
    const finish = (err: Error | undefined, body?: Buffer): void => {
      if (done) return
      done = true
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('aborted', onAborted)
      req.off('close', onClose)
      if (err) reject(err)
      else resolve(body ?? Buffer.alloc(0))
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > maxBytes) {
        finish(new HttpProblem(413, 'ETOOLARGE', `request body is over the limit of ${maxBytes} bytes`, { details: { limit: maxBytes } }))
        return
      }
      parts.push(chunk)
    }
    const onEnd = (): void => finish(undefined, Buffer.concat(parts, size))
    const onError = (e: Error): void => finish(e)
    const onAborted = (): void => finish(new HttpProblem(400, 'EABORTED', 'client aborted the request body'))
    const onClose = (): void => {
      if (!req.complete) onAborted()
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
    req.on('aborted', onAborted)
    req.on('close', onClose)
  })

/** Parses JSON, turning a syntax error into a 400 that says where. */
export const parseJsonBody = (body: Buffer): unknown => {
  if (body.length === 0) throw new HttpProblem(400, 'EBADJSON', 'request body is empty; expected JSON')
  try {
    return JSON.parse(body.toString('utf8')) as unknown
  } catch (e) {
    throw new HttpProblem(400, 'EBADJSON', `request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
}

export interface ByteRange {
  start: number
  /** Inclusive. */
  end: number
}

/**
 * Parses a `Range` header against a file of `size` bytes (RFC 9110 §14).
 * Returns `undefined` for no/ignorable header (serve it all), `'unsatisfiable'`
 * for a range wholly outside the file (416), else one range. Multipart
 * (several-range) requests are not supported: they are answered with the
 * whole file, which RFC 9110 allows, as is a syntactically invalid range.
 */
export const parseRange = (header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined => {
  if (header === undefined) return undefined
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header.trim())
  if (!m) return undefined
  const [, a = '', b = ''] = m
  if (a === '' && b === '') return undefined
  if (a === '') {
    // Suffix range: the last N bytes.
    const n = Number(b)
    if (n === 0) return 'unsatisfiable'
    return size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(a)
  if (!Number.isSafeInteger(start) || start >= size) return 'unsatisfiable'
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
  if (!Number.isSafeInteger(end) || end < start) return b !== '' && Number(b) < start ? undefined : 'unsatisfiable'
  return { start, end }
}
