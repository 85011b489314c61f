/**
 * The head's one line per boot (issue #21): an operator tailing the head's
 * log sees every boot and every failed boot without asking for debug, and
 * the line holds what to look at next (node, image, style, fallbacks, error).
 */
import type { AgentEvent } from '../protocol/event.js'
import type { BootSummary } from './node-state.js'

/** The level, fields and message for a stored event, or `undefined` when it is not a boot. */
export const bootLogLine = (
  e: Pick<AgentEvent, 'kind' | 'node' | 'id'>,
  boot: BootSummary | undefined,
): { level: 'info' | 'warn'; fields: Record<string, unknown>; message: string } | undefined => {
  if (e.kind !== 'boot' && e.kind !== 'boot-failed') return undefined
  // The summary is the node's latest boot; an older boot delivered late is logged by its id alone.
  const b = boot?.eventId === e.id ? boot : undefined
  const failed = e.kind === 'boot-failed' || b?.result === 'failed'
  const image = b?.image ? `${b.image.name ?? '?'}${b.image.sha256 ? `@${b.image.sha256.slice(0, 12)}` : ''}` : undefined
  const fallbacks = (b?.fallbacks ?? []).map((f) => f.kind)
  const fields: Record<string, unknown> = {
    node: e.node,
    event: e.id,
    ...(image ? { image } : {}),
    ...(b?.style ? { style: b.style } : {}),
    ...(b?.cacheHit !== undefined ? { cacheHit: b.cacheHit } : {}),
    ...(fallbacks.length ? { fallbacks } : {}),
    ...(b?.error ? { error: b.error } : {}),
  }
  const what = [image, b?.style, b?.cacheHit === undefined ? undefined : b.cacheHit ? 'cache hit' : 'cache miss', fallbacks.length ? `fallbacks: ${fallbacks.join(', ')}` : undefined]
    .filter(Boolean)
    .join(', ')
  return failed
    ? { level: 'warn', fields, message: `node ${e.node} boot FAILED${what ? ` (${what})` : ''}${b?.error ? `: ${b.error}` : ''}` }
    : { level: 'info', fields, message: `node ${e.node} booted${what ? ` (${what})` : ''}` }
}
