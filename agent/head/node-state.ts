/**
 * What the head node knows about each node, folded from its events (pure,
 * no I/O): last boot, last status, fallbacks, integrity and kernel errors.
 * Rebuilt at start by replaying the event store, then kept up to date as
 * batches are stored. Events may arrive out of order (spools drain late), so
 * "last" means latest by the event's own time.
 */
import type { AgentEvent } from '../events/event.js'
import { isSafeName, isSha256 } from './names.js'

export interface ImageId {
  name?: string
  sha256?: string
}

export interface BootSummary {
  eventId: string
  time: string
  result: 'ok' | 'failed'
  style?: string
  requestedStyle?: string
  fallbacks: Array<{ kind: string; reason: string }>
  image?: ImageId
  error?: string
  cacheHit?: boolean
  bytesFetched?: number
}

export interface IntegrityReport {
  eventId: string
  time: string
  image?: ImageId
  /** Digest the bytes should have had. */
  expected?: string
  /** Digest they had. */
  found?: string
  url?: string
  algorithm?: string
  /** Chunk index when one chunk (not the whole image) failed. */
  chunk?: number
  /**
   * The bytes came from a server (a download or a boot that failed on
   * EINTEGRITY), as opposed to a node's own cached copy going bad: only these
   * say something about what the head or its mirrors serve.
   */
  download: boolean
  /** Derived from a boot-failed event (error EINTEGRITY) rather than sent as an integrity event. */
  fromBoot?: boolean
}

export interface ErrorTally {
  count: number
  first?: string
  last?: string
  image?: ImageId
}

export interface NodeView {
  node: string
  events: number
  lastEventAt?: string
  lastBoot?: BootSummary
  lastFallback?: { eventId: string; time: string; data: Record<string, unknown> }
  lastStatus?: { eventId: string; time: string; image?: ImageId; data: Record<string, unknown> }
  /** The most recent integrity reports (at most {@link MAX_KEPT_REPORTS}). */
  integrity: IntegrityReport[]
  integrityCount: number
  squashfsErrors: ErrorTally
  ioErrors: ErrorTally
  /** Events the node said it could not keep. */
  lost: number
}

export const MAX_KEPT_REPORTS = 20

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)

const imageOf = (e: AgentEvent): ImageId | undefined => {
  const src: unknown = e.image ?? e.data.image
  if (!isRecord(src)) return undefined
  const out: ImageId = {}
  if (isSafeName(src.name)) out.name = src.name
  if (isSha256(src.sha256)) out.sha256 = src.sha256
  return out.name || out.sha256 ? out : undefined
}

const imageOfData = (d: Record<string, unknown>): ImageId | undefined => {
  const src = d.image
  if (!isRecord(src)) return undefined
  const out: ImageId = {}
  if (isSafeName(src.name)) out.name = src.name
  if (isSha256(src.sha256)) out.sha256 = src.sha256
  return out.name || out.sha256 ? out : undefined
}

const later = (a: string, b: string | undefined): boolean => b === undefined || Date.parse(a) >= Date.parse(b)

const tally = (t: ErrorTally, e: AgentEvent): void => {
  const n = num(e.data.count) ?? 1
  t.count += Math.max(1, Math.floor(n))
  const first = str(e.data.first) ?? e.time
  if (t.first === undefined || Date.parse(first) < Date.parse(t.first)) t.first = first
  if (later(e.time, t.last)) {
    t.last = e.time
    const img = imageOf(e)
    if (img) t.image = img
  }
}

export class NodeStates {
  private readonly nodes = new Map<string, NodeView>()

  private addIntegrity(v: NodeView, r: IntegrityReport): void {
    v.integrityCount++
    v.integrity.push(r)
    v.integrity.sort((a, b) => Date.parse(a.time) - Date.parse(b.time))
    if (v.integrity.length > MAX_KEPT_REPORTS) v.integrity.splice(0, v.integrity.length - MAX_KEPT_REPORTS)
  }

  get(node: string): NodeView | undefined {
    return this.nodes.get(node)
  }

  all(): NodeView[] {
    return [...this.nodes.values()]
  }

  apply(e: AgentEvent): void {
    let v = this.nodes.get(e.node)
    if (!v) {
      v = { node: e.node, events: 0, integrity: [], integrityCount: 0, squashfsErrors: { count: 0 }, ioErrors: { count: 0 }, lost: 0 }
      this.nodes.set(e.node, v)
    }
    v.events++
    if (later(e.time, v.lastEventAt)) v.lastEventAt = e.time
    const d = e.data
    switch (e.kind) {
      case 'boot':
      case 'boot-failed': {
        // The boot record comes flat in `data` or nested as `data.record` (the boot stage's form).
        const rec: Record<string, unknown> = isRecord(d.record) ? d.record : d
        const err = d.error ?? rec.error
        if (e.kind === 'boot-failed' && isRecord(err) && err.code === 'EINTEGRITY') {
          // The boot failed because the bytes served did not match: an integrity report too.
          const image = imageOf(e)
          this.addIntegrity(v, { eventId: e.id, time: e.time, download: true, fromBoot: true, ...(image ? { image } : {}) })
        }
        if (!later(e.time, v.lastBoot?.time)) break
        const result = e.kind === 'boot-failed' || rec.result === 'failed' ? 'failed' : 'ok'
        const fallbacks = Array.isArray(rec.fallbacks)
          ? rec.fallbacks.filter(isRecord).map((f) => ({ kind: str(f.kind) ?? 'unknown', reason: str(f.reason) ?? '' }))
          : []
        const image = imageOf(e) ?? imageOfData(rec)
        const cache = isRecord(rec.cache) ? rec.cache : undefined
        const error = isRecord(err) ? str(err.message) : str(err)
        v.lastBoot = {
          eventId: e.id,
          time: e.time,
          result,
          fallbacks,
          ...(str(rec.style) ? { style: str(rec.style) } : {}),
          ...(str(rec.requestedStyle) ? { requestedStyle: str(rec.requestedStyle) } : {}),
          ...(image ? { image } : {}),
          ...(error ? { error } : {}),
          ...(typeof cache?.hit === 'boolean' ? { cacheHit: cache.hit } : {}),
          ...(num(rec.bytesFetched) !== undefined ? { bytesFetched: num(rec.bytesFetched) } : {}),
        }
        break
      }
      case 'fallback':
        if (later(e.time, v.lastFallback?.time)) v.lastFallback = { eventId: e.id, time: e.time, data: d }
        break
      case 'status':
        if (later(e.time, v.lastStatus?.time)) {
          const image = imageOf(e)
          v.lastStatus = { eventId: e.id, time: e.time, data: d, ...(image ? { image } : {}) }
        }
        break
      case 'integrity': {
        const image = imageOf(e)
        const chunk = num(d.chunk)
        const r: IntegrityReport = {
          eventId: e.id,
          time: e.time,
          download: str(d.url) !== undefined || chunk !== undefined,
          ...(image ? { image } : {}),
          ...(str(d.expected) ? { expected: str(d.expected) } : {}),
          ...(str(d.found) ? { found: str(d.found) } : {}),
          ...(str(d.url) ? { url: str(d.url) } : {}),
          ...(str(d.algorithm) ? { algorithm: str(d.algorithm) } : {}),
          ...(chunk !== undefined ? { chunk } : {}),
        }
        this.addIntegrity(v, r)
        break
      }
      case 'squashfs-error':
        tally(v.squashfsErrors, e)
        break
      case 'io-error':
        tally(v.ioErrors, e)
        break
      case 'lost':
        v.lost += Math.max(0, Math.floor(num(d.count) ?? 0))
        break
      default:
        break
    }
  }
}

/**
 * The digest a node runs now, with where that knowledge came from: its last
 * status heartbeat or its last successful boot, whichever is later.
 */
export const runningImage = (v: NodeView): (ImageId & { source: 'status' | 'boot'; time: string }) | undefined => {
  const boot = v.lastBoot?.result === 'ok' && v.lastBoot.image?.sha256 ? v.lastBoot : undefined
  const status = v.lastStatus?.image?.sha256 ? v.lastStatus : undefined
  if (status && (!boot || later(status.time, boot.time))) return { ...status.image, source: 'status', time: status.time }
  if (boot) return { ...boot.image, source: 'boot', time: boot.time }
  return undefined
}
