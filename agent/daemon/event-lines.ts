/**
 * The daemon's journal line for an event it spooled: what an administrator
 * reads in `journalctl -u boot-agent` (a sentence first, the facts after) and
 * filters with `-p err` / `-p warning`. The facts are the fields a script
 * takes from `journalctl -o json` (MESSAGE's `key=value` pairs): event, kind,
 * node, image, device, count. Pure: the daemon logs what this returns.
 */
import type { Logger } from '../core/log.js'
import type { AgentEvent } from '../protocol/event.js'

export interface EventLine {
  level: 'error' | 'warn' | 'info'
  msg: string
  fields: Record<string, unknown>
}

/** `sha256:ab12cd34ef56` — enough to tell images apart in prose; the fact `image` has the whole digest. */
const shortDigest = (sha256: string): string => `sha256:${sha256.slice(0, 12)}`

/**
 * How an event reads in the journal, or undefined for events that are not
 * news to a person (status heartbeats, cache bookkeeping that went well).
 */
export const eventLine = (e: AgentEvent): EventLine | undefined => {
  const data = e.data as Record<string, unknown>
  const device = typeof data.device === 'string' ? data.device : undefined
  const count = typeof data.count === 'number' ? data.count : undefined
  const sha = e.image?.sha256
  const name = e.image?.name
  const image = sha ? `image ${name ? `${name} (${shortDigest(sha)})` : shortDigest(sha)}` : name ? `image ${name}` : 'no known image'
  const where = `${image}${device ? ` on ${device}` : ''} (node ${e.node})`
  const times = count !== undefined && count > 1 ? `, ${count} times` : ''
  const fields: Record<string, unknown> = {
    event: e.id,
    kind: e.kind,
    node: e.node,
    ...(sha ? { image: `sha256:${sha}` } : {}),
    ...(name ? { imageName: name } : {}),
    ...(device ? { device } : {}),
    ...(count !== undefined ? { count } : {}),
  }
  switch (e.kind) {
    case 'squashfs-error':
      return { level: 'error', msg: `squashfs error: ${where}${times}`, fields }
    case 'io-error':
      return { level: 'error', msg: `block I/O error: ${where}${times}`, fields }
    case 'integrity': {
      const action = typeof data.action === 'string' ? data.action : undefined
      return { level: 'error', msg: `integrity failure: ${where}${action ? `; ${action}` : ''}`, fields: { ...fields, ...(action ? { action } : {}) } }
    }
    case 'boot-failed':
      return { level: 'error', msg: `boot failed: ${where}`, fields }
    case 'fallback':
      return { level: 'warn', msg: `boot fell back: ${where}`, fields }
    case 'lost': {
      const source = typeof data.source === 'string' ? data.source : 'events'
      const reason = typeof data.reason === 'string' ? `: ${data.reason}` : ''
      return { level: 'warn', msg: `lost ${count ?? 'some'} ${source} record(s) (node ${e.node})${reason}`, fields: { ...fields, source } }
    }
    case 'cache':
      return data.action === 'self-check-failed' ? { level: 'warn', msg: `cache self-check could not run: ${where}`, fields } : undefined
    default:
      return undefined
  }
}

/** Logs each event a person should hear of, at its level (eventLine). */
export const logEvents = (log: Logger, events: readonly AgentEvent[]): void => {
  for (const e of events) {
    const line = eventLine(e)
    if (line) log[line.level](line.fields, line.msg)
  }
}
