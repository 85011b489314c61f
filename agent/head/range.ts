/**
 * Serving a file's bytes with `Range` (RFC 9110 §14): the whole file (200),
 * one range (206), 416 outside the file, headers only for HEAD. Multipart
 * (several-range) requests get the whole file, which RFC 9110 allows.
 * With an `etag` (by-digest files) `If-None-Match` gets 304 and `If-Range`
 * is honoured: our own tag keeps the Range, anything else (a date, another
 * tag) gets the whole file, as RFC 9110 §13.1.5 says.
 */
import { createReadStream } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { pipeline } from 'node:stream/promises'
import { HttpProblem } from './http-util.js'
import { ifRangeHolds, notModified } from './immutable.js'

/** Read size when streaming a file's bytes. */
export const FILE_READ_BYTES = 1 << 20

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

export interface SendFileOptions {
  /** A HEAD request: headers only. */
  head: boolean
  /** Called with the size of each chunk of body bytes sent. */
  onBytes?: (bytes: number) => void
  /** Called when the body stream ends early (the client went away, a read failed): the answer is cut short, not an error. */
  onCut?: (err: unknown) => void
  /** A strong ETag for the bytes (by-digest files): sent, and `If-None-Match` / `If-Range` answered against it. */
  etag?: string
  /** `Cache-Control` to send. */
  cacheControl?: string
}

/**
 * Answers `req` with the bytes of the open file `fh`, honouring `Range`.
 * Takes `fh` over: it is closed when the answer is done, whatever happens.
 * Size and bytes come from the one descriptor, so they agree even if the
 * path is replaced meanwhile. Throws 416 ERANGE (its `Content-Range` naming
 * the file's size) for a range outside the file, before anything is sent.
 */
export const sendFile = async (req: IncomingMessage, res: ServerResponse, fh: FileHandle, opts: SendFileOptions): Promise<void> => {
  let handedOff = false
  try {
    const size = (await fh.stat()).size
    const validators: Record<string, string> = {
      ...(opts.etag ? { etag: opts.etag } : {}),
      ...(opts.cacheControl ? { 'cache-control': opts.cacheControl } : {}),
    }
    if (opts.etag && notModified(req, opts.etag)) {
      res.writeHead(304, validators)
      res.end()
      return
    }
    // If-Range naming another representation: the whole file (RFC 9110 §13.1.5).
    const asked = typeof req.headers.range === 'string' && ifRangeHolds(req, opts.etag) ? req.headers.range : undefined
    const range = parseRange(asked, size)
    if (range === 'unsatisfiable') {
      throw new HttpProblem(416, 'ERANGE', `range ${req.headers.range ?? ''} is outside the image's ${size} bytes`, {
        headers: { 'content-range': `bytes */${size}` },
      })
    }
    const start = range?.start ?? 0
    const end = range?.end ?? size - 1
    const length = size === 0 ? 0 : end - start + 1
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(length),
      'accept-ranges': 'bytes',
      ...validators,
    }
    if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`
    res.writeHead(range ? 206 : 200, headers)
    if (opts.head || length === 0) {
      res.end()
      return
    }
    const stream = createReadStream('', { fd: fh, start, end, highWaterMark: FILE_READ_BYTES, autoClose: true })
    handedOff = true
    const { onBytes } = opts
    if (onBytes) stream.on('data', (chunk) => onBytes((chunk as Buffer).length))
    await pipeline(stream, res).catch((e: unknown) => opts.onCut?.(e))
  } finally {
    if (!handedOff) await fh.close()
  }
}
