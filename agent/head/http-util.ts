/**
 * Small HTTP helpers for the head node (plain node:http, no framework):
 * JSON answers, problem answers that name what was wrong, and a body reader
 * with a hard size limit.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { BootAgentError, type ErrorCode } from '../core/errors.js'

/**
 * Every code the head answers a problem with (the `error.code` of the body;
 * docs/protocol.md): a subset of the one set, ERROR_CODES (core/errors.ts),
 * where each code's meaning is written.
 */
export const HTTP_PROBLEM_CODES = [
  'EABORT', 'EARCH', 'EAUTH', 'EBADARCH', 'EBADDIGEST', 'EBADEVENT', 'EBADJSON', 'EBADNAME', 'EBADPATH', 'EINTERNAL',
  'EIDENTITY',
  'EBUSY',
  'EMEDIATYPE', 'EMETHOD', 'ENOIMAGE', 'ENONODE', 'ENOTFOUND', 'ERANGE', 'ERATE', 'ESTORE', 'ETOOLARGE', 'ETOOMANY',
] as const satisfies readonly ErrorCode[]
export type HttpProblemCode = (typeof HTTP_PROBLEM_CODES)[number]

/** True when `code` is one of {@link HTTP_PROBLEM_CODES}. */
export const isHttpProblemCode = (code: string): code is HttpProblemCode => (HTTP_PROBLEM_CODES as readonly string[]).includes(code)

/**
 * An answer other than success, thrown by a handler and turned into
 * `{error: {status, code, message, ...details}}` by the server. Part of the
 * one error hierarchy: its `context` is the `details` the body carries.
 */
export class HttpProblem extends BootAgentError {
  declare readonly code: HttpProblemCode
  /** HTTP status of the answer. */
  readonly status: number
  /** Headers the answer carries (`allow`, `retry-after`, `content-range`, ...). */
  readonly headers: Record<string, string>
  constructor(status: number, code: HttpProblemCode, message: string, opts: { details?: Record<string, unknown>; headers?: Record<string, string> } = {}) {
    super(code, message, opts.details ?? {})
    this.status = status
    this.headers = opts.headers ?? {}
  }

  /** Fields the body carries beside status, code and message (the error's context). */
  get details(): Record<string, unknown> {
    return this.context
  }
}

/** Sends `body` as JSON with `status`; returns the body's size in bytes. */
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

/** Sends a problem as `{error: {status, code, message, ...details}}`; returns the body's size in bytes. */
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
    const onAborted = (): void => finish(new HttpProblem(400, 'EABORT', 'client aborted the request body'))
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
