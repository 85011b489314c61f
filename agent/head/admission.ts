/**
 * The head under a storm (issue 20): bounded requests in flight and bounded
 * image streams (each holds a file descriptor and socket buffers), so memory
 * and descriptors stay bounded however many nodes boot at once. A request
 * over a cap is answered at once — 503 EBUSY with `Retry-After` — instead of
 * queueing until it times out; the Retry-After is spread per node (a hash of
 * its id), so the shed nodes come back at different seconds, not together.
 * The nodes honour it (core/retry.ts: never sooner than Retry-After).
 */
import { createHash } from 'node:crypto'
import { HttpProblem } from './http-util.js'

export interface AdmissionLimits {
  /** Requests in flight at once (any route); over it: 503. */
  maxRequests: number
  /** Image byte streams at once; over it: 503. */
  maxImageStreams: number
  /** Shortest Retry-After sent (seconds). */
  retryAfterMinS: number
  /** Retry-After is spread over this many seconds above the minimum, by node. */
  retryAfterSpreadS: number
}

/**
 * Defaults: 64 image streams read the disk and fill a 10–25 Gb/s link (each
 * streams in 1 MiB reads); 1,024 requests in flight hold at most a few MB of
 * state. Retry-After 1–8 s spreads a thousand shed nodes over eight seconds.
 */
export const DEFAULT_ADMISSION: AdmissionLimits = { maxRequests: 1024, maxImageStreams: 64, retryAfterMinS: 1, retryAfterSpreadS: 8 }

/** Seconds to tell `key` (a node id, else its address) to wait: min + hash(key) mod spread. Pure. */
export const retryAfterFor = (key: string, limits: Pick<AdmissionLimits, 'retryAfterMinS' | 'retryAfterSpreadS'>): number =>
  limits.retryAfterMinS + (createHash('sha256').update(key).digest().readUInt32LE(0) % Math.max(1, limits.retryAfterSpreadS))

/** What admission has done so far (the head's stats). */
export interface AdmissionStats {
  /** Requests answered 503 EBUSY. */
  shed: number
  peakRequests: number
  peakImageStreams: number
}

/** Counts requests and image streams in flight; {@link admit} refuses over the caps. */
export class Admission {
  private requests = 0
  private images = 0
  readonly stats: AdmissionStats = { shed: 0, peakRequests: 0, peakImageStreams: 0 }

  constructor(private readonly limits: AdmissionLimits) {}

  /**
   * Admits a request (an image stream when `image`), or throws 503 EBUSY with
   * Retry-After for `key`. The caller calls the returned release once the
   * answer is done (whatever happened).
   */
  admit(key: string, image: boolean): () => void {
    if (this.requests >= this.limits.maxRequests || (image && this.images >= this.limits.maxImageStreams)) {
      this.stats.shed++
      const s = retryAfterFor(key, this.limits)
      const what = image && this.images >= this.limits.maxImageStreams ? `${this.images} image streams` : `${this.requests} requests`
      throw new HttpProblem(503, 'EBUSY', `the head is serving ${what}, its cap; retry after ${s} s`, { headers: { 'retry-after': String(s) } })
    }
    this.requests++
    if (image) this.images++
    this.stats.peakRequests = Math.max(this.stats.peakRequests, this.requests)
    if (image) this.stats.peakImageStreams = Math.max(this.stats.peakImageStreams, this.images)
    let released = false
    return () => {
      if (released) return
      released = true
      this.requests--
      if (image) this.images--
    }
  }
}
