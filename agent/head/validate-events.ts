/**
 * Validation of an event batch posted by a node (SPEC §8), at the edge:
 * the body is `unknown` until every event in it has been checked, and a bad
 * batch is refused whole (400 naming the first bad field), so nothing of it
 * is stored. Each event is checked by the protocol's one parser
 * (agent/protocol/parse.ts); the batch's limits are the head's own.
 */
import type { AgentEvent } from '../protocol/event.js'
import { parseEvent } from '../protocol/parse.js'
import { isRecord } from '../protocol/fields.js'
import { HttpProblem } from './http-util.js'

export interface EventLimits {
  /** Most events in one batch (more: 413). */
  maxEventsPerBatch: number
  /** Most bytes of one event's JSON (more: 413). */
  maxEventBytes: number
}

export const DEFAULT_EVENT_LIMITS: EventLimits = { maxEventsPerBatch: 1000, maxEventBytes: 64 * 1024 }

const bad = (field: string, problem: string): HttpProblem =>
  new HttpProblem(400, 'EBADEVENT', `${field}: ${problem}`, { details: { field } })

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
    const parsed = parseEvent(e, { node })
    if (!parsed.ok) throw bad(parsed.field ? `${f}.${parsed.field}` : f, parsed.problem)
    const event = parsed.event
    if (seen.has(event.id)) return
    seen.add(event.id)
    out.push(event)
  })
  return out
}
