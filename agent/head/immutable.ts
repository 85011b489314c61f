/**
 * What lets any HTTP cache keep the head's by-digest answers (issue 20): the
 * bytes under `/v1/images/by-digest/{sha256}/…` never change (the digest is
 * in the path), so they are sent `Cache-Control: public, max-age=31536000,
 * immutable` with a strong `ETag` that is the digest; conditional requests
 * (`If-None-Match`, `If-Range`) are answered against it. And manifests are
 * gzip-compressed on the wire for a client that accepts it, each compressed
 * once and kept (bounded) — a 2 GiB image's manifest is ~2.4 MB of hex digests.
 *
 * The ETag names the representation; it is no proof of the bytes: the node
 * still verifies every chunk against the manifest (docs/protocol.md).
 */
import type { IncomingMessage } from 'node:http'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'

/** Cache-Control of an answer under a by-digest path (RFC 8246). */
export const IMMUTABLE_CACHE_CONTROL = 'public, max-age=31536000, immutable'

/** The strong ETag of the by-digest answers for `sha256`. */
export const digestEtag = (sha256: string): string => `"${sha256}"`

/** The entity tags of an `If-None-Match` or `If-Range` header (`*` as itself); weak tags keep their `W/`. */
const tagsOf = (header: string): string[] => header.split(',').map((s) => s.trim()).filter(Boolean)

/** Whether `If-None-Match` matches `etag` (weak comparison, RFC 9110 §13.1.2): answer 304. */
export const notModified = (req: IncomingMessage, etag: string): boolean => {
  const h = req.headers['if-none-match']
  if (typeof h !== 'string') return false
  return tagsOf(h).some((t) => t === '*' || t === etag || t === `W/${etag}`)
}

/**
 * Whether a `Range` may be honoured under `If-Range` (RFC 9110 §13.1.5):
 * yes without the header, or when it is our strong ETag; a date or another
 * tag means the client holds another representation: send it all (200).
 */
export const ifRangeHolds = (req: IncomingMessage, etag: string | undefined): boolean => {
  const h = req.headers['if-range']
  if (typeof h !== 'string') return true
  return etag !== undefined && h.trim() === etag
}

/** Whether the request accepts a gzip content coding (`Accept-Encoding`, q > 0). */
export const acceptsGzip = (req: IncomingMessage): boolean => {
  const h = req.headers['accept-encoding']
  if (typeof h !== 'string') return false
  return h.split(',').some((part) => {
    const [coding = '', ...params] = part.split(';').map((s) => s.trim().toLowerCase())
    if (coding !== 'gzip' && coding !== 'x-gzip' && coding !== '*') return false
    const q = params.find((p) => p.startsWith('q='))
    return q === undefined || Number(q.slice(2)) > 0
  })
}

const gzipAsync = promisify(gzip)

/** Default bound of the compressed manifests kept in memory. */
export const GZIP_CACHE_BYTES = 32 * 1024 * 1024

/**
 * Manifests compressed once per digest and kept, least recently used out
 * first, within `maxBytes`; concurrent asks for one digest share one
 * compression (a storm of 1,000 nodes compresses it once).
 */
export class GzipCache {
  private readonly done = new Map<string, Buffer>()
  private readonly pending = new Map<string, Promise<Buffer>>()
  private bytes = 0

  constructor(private readonly maxBytes: number = GZIP_CACHE_BYTES) {}

  /** The gzip of `text`, keyed by `sha256` (a manifest's text never changes for a digest). */
  async get(sha256: string, text: string): Promise<Buffer> {
    const hit = this.done.get(sha256)
    if (hit) {
      this.done.delete(sha256)
      this.done.set(sha256, hit)
      return hit
    }
    let p = this.pending.get(sha256)
    if (!p) {
      p = gzipAsync(text).finally(() => this.pending.delete(sha256))
      this.pending.set(sha256, p)
      const gz = await p
      this.keep(sha256, gz)
      return gz
    }
    return p
  }

  private keep(sha256: string, gz: Buffer): void {
    if (gz.length > this.maxBytes || this.done.has(sha256)) return
    this.done.set(sha256, gz)
    this.bytes += gz.length
    for (const [k, v] of this.done) {
      if (this.bytes <= this.maxBytes) break
      this.done.delete(k)
      this.bytes -= v.length
    }
  }
}
