/**
 * The one parser of events: `unknown` (a posted batch's element, a spooled
 * file, a line of the head's event store) in, a typed {@link AgentEvent} or a
 * refusal naming the field out. The node's spool and the head node's
 * validation and event store all read events through it, so what a node
 * keeps is what a head accepts.
 */
import { ENVELOPE_FIELDS, EVENT_KINDS, isEventKind, type AgentEvent } from './event.js'
import { BOOT_RECORD, PAYLOAD_FIELDS } from './payloads.js'
import { checkFields, isRecord, type Refusal } from './fields.js'
import { isSafeName, isSha256 } from './names.js'

export type { Refusal } from './fields.js'

/** An event id: a UUID, or anything of the same alphabet up to 128 characters. */
const EVENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/

/** What {@link parseEvent} says: the typed event, or why not (the field is relative to the event: `data.found`; `` for the whole). */
export type EventParse = { ok: true; event: AgentEvent } | ({ ok: false } & Refusal)

export interface ParseEventOptions {
  /** The node the event must belong to (the head node: the node in the URL the batch was posted to). */
  node?: string
}

const refuse = (field: string, problem: string): EventParse => ({ ok: false, field, problem })

/**
 * Protocol v1 documented the boot record two ways: nested as `data.record`
 * (what agent/boot/handoff.ts has always sent) or flat in `data` (how other
 * nodes and the first head-side tests sent it). Readers see one shape: a
 * flat record becomes `{record: data}`, with the failed boot's `error` and
 * `action` also on top as the nested form has them. This is the only place
 * the flat form is known.
 */
const normaliseBoot = (data: Record<string, unknown>): Record<string, unknown> =>
  data.record !== undefined
    ? data
    : { record: data, ...(data.error !== undefined ? { error: data.error } : {}), ...(data.action !== undefined ? { action: data.action } : {}) }

/** Checks one event; see {@link EventParse}. Fields of `data` the payload table does not name are kept as they are. */
export const parseEvent = (e: unknown, opts: ParseEventOptions = {}): EventParse => {
  if (!isRecord(e)) return refuse('', 'must be an object')
  for (const k of Object.keys(e)) {
    if (!(ENVELOPE_FIELDS as readonly string[]).includes(k)) return refuse(k, 'unknown field')
  }
  if (typeof e.id !== 'string' || !EVENT_ID.test(e.id)) return refuse('id', 'must be 1-128 characters of letters, digits and . _ : - (a UUID)')
  if (!isEventKind(e.kind)) return refuse('kind', `must be one of ${EVENT_KINDS.join(', ')} (got ${JSON.stringify(e.kind)})`)
  if (opts.node !== undefined && e.node !== opts.node) {
    return refuse('node', `is ${JSON.stringify(e.node)} but the batch was posted for node ${JSON.stringify(opts.node)}`)
  }
  if (typeof e.node !== 'string') return refuse('node', 'must be a string')
  if (typeof e.time !== 'string' || e.time.length > 64 || Number.isNaN(Date.parse(e.time))) return refuse('time', 'must be an ISO-8601 time')
  if (e.image !== undefined) {
    if (!isRecord(e.image)) return refuse('image', 'must be an object {name?, sha256?}')
    for (const k of Object.keys(e.image)) if (k !== 'name' && k !== 'sha256') return refuse(`image.${k}`, 'unknown field')
    if (e.image.name !== undefined && !isSafeName(e.image.name)) return refuse('image.name', 'is not a valid image name')
    if (e.image.sha256 !== undefined && !isSha256(e.image.sha256)) return refuse('image.sha256', 'must be 64 lower-case hex digits')
  }
  if (!isRecord(e.data)) return refuse('data', 'must be an object')
  let data = e.data
  if (e.kind === 'boot' || e.kind === 'boot-failed') {
    // A flat record is checked where it was sent, so the refusal names the field the sender wrote.
    if (data.record === undefined) {
      const r = checkFields(data, BOOT_RECORD, 'data')
      if (r) return { ok: false, ...r }
    }
    data = normaliseBoot(data)
  }
  const r = checkFields(data, PAYLOAD_FIELDS[e.kind], 'data')
  if (r) return { ok: false, ...r }
  return { ok: true, event: (data === e.data ? e : { ...e, data }) as unknown as AgentEvent }
}

/** {@link parseEvent} of a JSON text (a spooled file, a line of the event store). */
export const parseEventJson = (text: string, opts: ParseEventOptions = {}): EventParse => {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return refuse('', 'is not JSON')
  }
  return parseEvent(v, opts)
}

/** The head node's answer to a stored batch (docs/protocol.md): what is not a count reads as 0. */
export interface EventsAnswer {
  accepted: number
  duplicates: number
}

/** Parses the body of a 200 answer to `POST /v1/nodes/{node}/events`. */
export const parseEventsAnswer = (text: string): EventsAnswer => {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    v = {}
  }
  const o = isRecord(v) ? v : {}
  const num = (x: unknown): number => (typeof x === 'number' && Number.isSafeInteger(x) ? x : 0)
  return { accepted: num(o.accepted), duplicates: num(o.duplicates) }
}
