/**
 * Events reported upstream (SPEC §8). Every event carries a unique id: delivery
 * is at-least-once, and the head node keeps one copy per id.
 */
import { randomUUID } from 'node:crypto'

export const EVENT_KINDS = [
  'boot',
  'boot-failed',
  'fallback',
  'integrity',
  'squashfs-error',
  'io-error',
  'cache',
  'status',
  'lost',
] as const

export type EventKind = (typeof EVENT_KINDS)[number]

export interface ImageRef {
  name?: string
  /** Lower-case hex sha256 of the whole image: its identity. */
  sha256?: string
}

export interface AgentEvent {
  /** Unique id (UUID); the head node de-duplicates on it. */
  id: string
  kind: EventKind
  /** Node id as used in the head node's URLs. */
  node: string
  /** ISO-8601 time the event was made (for a coalesced event: the last occurrence). */
  time: string
  image?: ImageRef
  /** Kind-specific fields, JSON-serialisable. */
  data: Record<string, unknown>
}

export const isEventKind = (v: unknown): v is EventKind =>
  typeof v === 'string' && (EVENT_KINDS as readonly string[]).includes(v)

export const makeEvent = (
  kind: EventKind,
  node: string,
  data: Record<string, unknown>,
  opts: { image?: ImageRef; now?: Date; id?: string } = {},
): AgentEvent => ({
  id: opts.id ?? randomUUID(),
  kind,
  node,
  time: (opts.now ?? new Date()).toISOString(),
  ...(opts.image ? { image: opts.image } : {}),
  data,
})
