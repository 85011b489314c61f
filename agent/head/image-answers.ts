/**
 * Answers from the image store: manifests (by digest or by a name's current
 * digest) and image bytes (from the store's file, with Range, or a 302 to the
 * manifest's first mirror when the head is told to redirect).
 */
import { open } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isErrno } from '../core/errors.js'
import { HttpProblem } from './http-util.js'
import { sendFile } from './range.js'
import type { ImageStore } from './store.js'
import { acceptsGzip, digestEtag, type GzipCache, IMMUTABLE_CACHE_CONTROL, notModified } from './immutable.js'

/**
 * Sends the manifest stored for `sha256` (404 ENOIMAGE naming `what` when
 * there is none, or no digest). Returns the body bytes sent (0 for HEAD).
 */
export const sendManifest = async (res: ServerResponse, store: ImageStore, sha256: string | undefined, what: string, head: boolean, wire: ManifestWire = {}): Promise<number> => {
  const text = sha256 ? await store.manifestText(sha256) : undefined
  if (!sha256 || text === undefined) throw new HttpProblem(404, 'ENOIMAGE', `no manifest for ${what}`)
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8', 'x-image-sha256': sha256, 'cache-control': 'no-cache' }
  if (wire.immutable) {
    // The digest is in the path: what is sent here is what is sent forever.
    headers['cache-control'] = IMMUTABLE_CACHE_CONTROL
    headers.etag = digestEtag(sha256)
    if (wire.req && notModified(wire.req, headers.etag)) {
      res.writeHead(304, headers)
      res.end()
      return 0
    }
  }
  if (wire.gzip) headers.vary = 'accept-encoding'
  const body = wire.gzip && wire.req && acceptsGzip(wire.req) ? await wire.gzip.get(sha256, text) : Buffer.from(text)
  if (body.length !== Buffer.byteLength(text)) headers['content-encoding'] = 'gzip'
  headers['content-length'] = String(body.length)
  res.writeHead(200, headers)
  if (head) {
    res.end()
    return 0
  }
  res.end(body)
  return body.length
}

/** How a manifest goes on the wire (all optional: a plain, uncompressed, `no-cache` answer). */
export interface ManifestWire {
  /** The request (its `Accept-Encoding`, `If-None-Match`). */
  req?: IncomingMessage
  /** A by-digest path: `Cache-Control: immutable` and the digest as strong ETag. */
  immutable?: boolean
  /** Compress for a client that accepts gzip, through this cache. */
  gzip?: GzipCache
}

/** The first http(s) URL of a manifest's `urls`, when it has one. */
const firstMirror = (manifestText: string | undefined): string | undefined => {
  const urls: unknown = manifestText ? (JSON.parse(manifestText) as { urls?: unknown }).urls : undefined
  return Array.isArray(urls) ? urls.find((u): u is string => typeof u === 'string' && /^https?:\/\//.test(u)) : undefined
}

export interface SendImageOptions {
  head: boolean
  /** Answer with a 302 to the manifest's first mirror URL when it has one. */
  redirectToMirrors?: boolean
  /** Called with the size of each chunk of image bytes sent. */
  onBytes?: (bytes: number) => void
  /** Called when the body stream ends early. */
  onCut?: (err: unknown) => void
}

/** Sends the image bytes stored for `sha256` (404 ENOIMAGE when the store has no such object or lost its file). */
export const sendImage = async (req: IncomingMessage, res: ServerResponse, store: ImageStore, sha256: string, opts: SendImageOptions): Promise<void> => {
  const record = await store.objectRecord(sha256)
  if (!record) throw new HttpProblem(404, 'ENOIMAGE', `no image with digest ${sha256} in the store`)
  if (opts.redirectToMirrors) {
    const mirror = firstMirror(await store.manifestText(sha256))
    if (mirror) {
      res.writeHead(302, { location: mirror, 'content-length': '0' })
      res.end()
      return
    }
  }
  const fh = await open(store.objectPath(sha256), 'r').catch((e: unknown) => {
    if (isErrno(e, 'ENOENT')) throw new HttpProblem(404, 'ENOIMAGE', `the store's file for ${sha256} is missing (see GET /v1/consistency)`)
    throw e
  })
  // By digest: any cache may keep these bytes for good, and resume them with If-Range.
  await sendFile(req, res, fh, { head: opts.head, onBytes: opts.onBytes, onCut: opts.onCut, etag: digestEtag(sha256), cacheControl: IMMUTABLE_CACHE_CONTROL })
}
