/**
 * What the head node knows about each node, folded from its events (pure,
 * no I/O): last boot, last status, fallbacks, integrity and kernel errors.
 * Rebuilt at start by replaying the event store, then kept up to date as
 * batches are stored. Events may arrive out of order (spools drain late), so
 * "last" means latest by the event's own time.
 */
import type { AgentEvent, EventOf } from '../protocol/event.js'
import type { FallbackData, StatusData } from '../protocol/payloads.js'
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
  lastFallback?: { eventId: string; time: string; data: FallbackData }
  lastStatus?: { eventId: string; time: string; image?: ImageId; data: StatusData }
  /** The most recent integrity reports (at most {@link MAX_KEPT_REPORTS}). */
  integrity: IntegrityReport[]
  integrityCount: number
  squashfsErrors: ErrorTally
  ioErrors: ErrorTally
  /** Events the node said it could not keep. */
  lost: number
}

export const MAX_KEPT_REPORTS = 20

/** The image named, when its name and digest are valid (the parser checks types, not what a name may be). */
const imageFrom = (src: { name?: string; sha256?: string } | null | undefined): ImageId | undefined => {
  if (!src) return undefined
  const out: ImageId = {}
  if (isSafeName(src.name)) out.name = src.name
  if (isSha256(src.sha256)) out.sha256 = src.sha256
  return out.name || out.sha256 ? out : undefined
}

const later = (a: string, b: string | undefined): boolean => b === undefined || Date.parse(a) >= Date.parse(b)

const tally = (t: ErrorTally, e: EventOf<'squashfs-error' | 'io-error'>): void => {
  t.count += Math.max(1, Math.floor(e.data.count ?? 1))
  const first = e.data.firstTime ?? e.time
  if (t.first === undefined || Date.parse(first) < Date.parse(t.first)) t.first = first
  if (later(e.time, t.last)) {
    t.last = e.time
    const img = imageFrom(e.image)
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
    switch (e.kind) {
      case 'boot':
      case 'boot-failed': {
        // One shape: the parser (agent/protocol/parse.ts) nests a flat boot record as `data.record`.
        const rec = e.data.record
        const err = e.data.error ?? rec.error
        const image = imageFrom(e.image) ?? imageFrom(rec.image)
        if (e.kind === 'boot-failed' && err?.code === 'EINTEGRITY') {
          // The boot failed because the bytes served did not match: an integrity report too.
          this.addIntegrity(v, { eventId: e.id, time: e.time, download: true, fromBoot: true, ...(image ? { image } : {}) })
        }
        if (!later(e.time, v.lastBoot?.time)) break
        const result = e.kind === 'boot-failed' || rec.result === 'failed' ? 'failed' : 'ok'
        const fallbacks = (rec.fallbacks ?? []).map((f) => ({ kind: f.kind ?? 'unknown', reason: f.reason ?? '' }))
        const error = err?.message
        v.lastBoot = {
          eventId: e.id,
          time: e.time,
          result,
          fallbacks,
          ...(rec.style ? { style: rec.style } : {}),
          ...(rec.requestedStyle ? { requestedStyle: rec.requestedStyle } : {}),
          ...(image ? { image } : {}),
          ...(error ? { error } : {}),
          ...(rec.cache?.hit !== undefined ? { cacheHit: rec.cache.hit } : {}),
          ...(rec.bytesFetched !== undefined ? { bytesFetched: rec.bytesFetched } : {}),
        }
        break
      }
      case 'fallback':
        if (later(e.time, v.lastFallback?.time)) v.lastFallback = { eventId: e.id, time: e.time, data: e.data }
        break
      case 'status':
        if (later(e.time, v.lastStatus?.time)) {
          const image = imageFrom(e.image)
          v.lastStatus = { eventId: e.id, time: e.time, data: e.data, ...(image ? { image } : {}) }
        }
        break
      case 'integrity': {
        const d = e.data
        const image = imageFrom(e.image)
        const r: IntegrityReport = {
          eventId: e.id,
          time: e.time,
          download: d.url !== undefined || d.chunk !== undefined,
          ...(image ? { image } : {}),
          ...(d.expected ? { expected: d.expected } : {}),
          ...(d.found ? { found: d.found } : {}),
          ...(d.url ? { url: d.url } : {}),
          ...(d.algorithm ? { algorithm: d.algorithm } : {}),
          ...(d.chunk !== undefined ? { chunk: d.chunk } : {}),
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
        v.lost += Math.max(0, Math.floor(e.data.count ?? 0))
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
