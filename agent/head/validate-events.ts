/**
 * Validation of an event batch posted by a node (SPEC §8), at the edge:
 * the body is `unknown` until every event in it has been checked, and a bad
 * batch is refused whole (400 naming the first bad field), so nothing of it
 * is stored.
 */
import { type AgentEvent, EVENT_KINDS, isEventKind } from '../events/event.js'
import { HttpProblem } from './http-util.js'
import { isSafeName, isSha256 } from './names.js'

export interface EventLimits {
  /** Most events in one batch (more: 413). */
  maxEventsPerBatch: number
  /** Most bytes of one event's JSON (more: 413). */
  maxEventBytes: number
}

export const DEFAULT_EVENT_LIMITS: EventLimits = { maxEventsPerBatch: 1000, maxEventBytes: 64 * 1024 }

const EVENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/
const HEX_DIGEST = /^[0-9a-f]{16,128}$/

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

const bad = (field: string, problem: string): HttpProblem =>
  new HttpProblem(400, 'EBADEVENT', `${field}: ${problem}`, { details: { field } })

/** Kind-specific checks of `data`: only the fields the head node reads. */
const checkData = (field: string, kind: AgentEvent['kind'], data: Record<string, unknown>): void => {
  const optString = (k: string, max = 4096): void => {
    const v = data[k]
    if (v !== undefined && (typeof v !== 'string' || v.length > max)) throw bad(`${field}.data.${k}`, `must be a string of at most ${max} characters`)
  }
  const optCount = (k: string): void => {
    const v = data[k]
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) throw bad(`${field}.data.${k}`, 'must be a non-negative integer')
  }
  switch (kind) {
    case 'integrity':
      for (const k of ['expected', 'found']) {
        const v = data[k]
        if (v !== undefined && (typeof v !== 'string' || !HEX_DIGEST.test(v))) throw bad(`${field}.data.${k}`, 'must be a lower-case hex digest')
      }
      optString('url')
      optString('algorithm', 32)
      optCount('chunk')
      break
    case 'boot':
    case 'boot-failed': {
      const r = data.result
      if (r !== undefined && r !== 'ok' && r !== 'failed') throw bad(`${field}.data.result`, 'must be "ok" or "failed"')
      if (data.fallbacks !== undefined && !Array.isArray(data.fallbacks)) throw bad(`${field}.data.fallbacks`, 'must be an array')
      optString('style', 32)
      break
    }
    case 'lost':
    case 'squashfs-error':
    case 'io-error':
      optCount('count')
      break
    default:
      break
  }
}

/**
 * Checks one posted batch for `node`. Returns its events (in order; an id
 * repeated inside the batch is kept once). Throws HttpProblem 400 or 413.
 */
export const parseEventBatch = (body: unknown, node: string, limits: EventLimits = DEFAULT_EVENT_LIMITS): AgentEvent[] => {
  if (!isRecord(body)) throw bad('body', 'must be a JSON object {events: [...]}')
  const events = body.events
  if (!Array.isArray(events)) throw bad('events', 'must be an array of events')
  if (events.length > limits.maxEventsPerBatch) {
    throw new HttpProblem(413, 'ETOOMANY', `batch holds ${events.length} events, over the limit of ${limits.maxEventsPerBatch}`, {
      details: { limit: limits.maxEventsPerBatch },
    })
  }
  const out: AgentEvent[] = []
  const seen = new Set<string>()
  events.forEach((e: unknown, i) => {
    const f = `events[${i}]`
    if (!isRecord(e)) throw bad(f, 'must be an object')
    const size = Buffer.byteLength(JSON.stringify(e))
    if (size > limits.maxEventBytes) {
      throw new HttpProblem(413, 'ETOOLARGE', `${f} is ${size} bytes, over the limit of ${limits.maxEventBytes}`, { details: { field: f, limit: limits.maxEventBytes } })
    }
    for (const k of Object.keys(e)) {
      if (!['id', 'kind', 'node', 'time', 'image', 'data'].includes(k)) throw bad(`${f}.${k}`, 'unknown field')
    }
    if (typeof e.id !== 'string' || !EVENT_ID.test(e.id)) throw bad(`${f}.id`, 'must be 1-128 characters of letters, digits and . _ : - (a UUID)')
    if (!isEventKind(e.kind)) throw bad(`${f}.kind`, `must be one of ${EVENT_KINDS.join(', ')} (got ${JSON.stringify(e.kind)})`)
    if (e.node !== node) throw bad(`${f}.node`, `is ${JSON.stringify(e.node)} but the batch was posted for node ${JSON.stringify(node)}`)
    if (typeof e.time !== 'string' || e.time.length > 64 || Number.isNaN(Date.parse(e.time))) throw bad(`${f}.time`, 'must be an ISO-8601 time')
    if (e.image !== undefined) {
      if (!isRecord(e.image)) throw bad(`${f}.image`, 'must be an object {name?, sha256?}')
      for (const k of Object.keys(e.image)) if (k !== 'name' && k !== 'sha256') throw bad(`${f}.image.${k}`, 'unknown field')
      if (e.image.name !== undefined && !isSafeName(e.image.name)) throw bad(`${f}.image.name`, 'is not a valid image name')
      if (e.image.sha256 !== undefined && !isSha256(e.image.sha256)) throw bad(`${f}.image.sha256`, 'must be 64 lower-case hex digits')
    }
    if (!isRecord(e.data)) throw bad(`${f}.data`, 'must be an object')
    checkData(f, e.kind, e.data)
    if (seen.has(e.id)) return
    seen.add(e.id)
    out.push(e as unknown as AgentEvent)
  })
  return out
}
