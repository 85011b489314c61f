/**
 * Events reported upstream (SPEC §8): the envelope every event shares, and
 * the event type of each kind, a union discriminated on `kind`. Every event
 * carries a unique id: delivery is at-least-once, and the head node keeps
 * one copy per id. The payload of each kind is in payloads.ts; events from
 * the network or a file become typed only through parse.ts.
 */
import { randomUUID } from 'node:crypto'
import type { EventPayloads, ImageRef } from './payloads.js'

export type { ImageRef } from './payloads.js'

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
] as const satisfies ReadonlyArray<keyof EventPayloads>

export type EventKind = (typeof EVENT_KINDS)[number]

/** The fields every event has, whatever its kind. */
export interface EventEnvelope<K extends EventKind, D> {
  /** Unique id (UUID); the head node de-duplicates on it. */
  id: string
  kind: K
  /** Node id as used in the head node's URLs. */
  node: string
  /** ISO-8601 time the event was made (for a coalesced event: the last occurrence). */
  time: string
  image?: ImageRef
  /** Kind-specific fields (payloads.ts), JSON-serialisable. */
  data: D
}

/** The event of one kind (of each kind, for a union of kinds). */
export type EventOf<K extends EventKind> = K extends EventKind ? EventEnvelope<K, EventPayloads[K]> : never

/** Any event: a union discriminated on `kind`. */
export type AgentEvent = { [K in EventKind]: EventOf<K> }[EventKind]

/** The top-level fields of an event; no others are allowed. */
export const ENVELOPE_FIELDS = ['id', 'kind', 'node', 'time', 'image', 'data'] as const

export const isEventKind = (v: unknown): v is EventKind =>
  typeof v === 'string' && (EVENT_KINDS as readonly string[]).includes(v)

/** A new event of `kind` with the payload of that kind (a boot event cannot carry an integrity payload). */
export const makeEvent = <K extends EventKind>(
  kind: K,
  node: string,
  data: EventPayloads[K],
  opts: { image?: ImageRef; now?: Date; id?: string } = {},
): EventOf<K> => ({
  id: opts.id ?? randomUUID(),
  kind,
  node,
  time: (opts.now ?? new Date()).toISOString(),
  ...(opts.image ? { image: opts.image } : {}),
  data,
}) as EventOf<K>
