/**
 * Coalesces floods (SPEC §8): records with the same kind, device and message
 * class become one event with a count, the first and last time, and the
 * kernel sequence numbers it covers, so a node reading a corrupt image does
 * not send one event per failed page, and nothing is dropped either.
 *
 * Pure: the caller decides when to drain (a time window, a size bound) and
 * gives each record its time.
 */
import { createHash } from 'node:crypto'
import { makeEvent, type EventOf, type ImageRef } from '../protocol/event.js'
import type { KernelErrorData } from '../protocol/payloads.js'

export interface CoalesceInput {
  kind: 'squashfs-error' | 'io-error'
  /** Message class, e.g. `decompression-failed`. */
  class: string
  /** Device, or an object digest, or `unknown`: the second half of the key. */
  device?: string
  seq: number
  time: Date
  message: string
  image?: ImageRef
  /** Fields copied into the event from the first record of the group. */
  fields: KernelErrorData
  /** A block (byte offset in the image, or a sector) to list in the event. */
  block?: { offset: number; size?: number }
}

/** Most distinct blocks listed in one event (the count still counts all). */
export const MAX_BLOCKS_PER_EVENT = 64

interface Group {
  input: CoalesceInput
  count: number
  firstTime: Date
  lastTime: Date
  /** Inclusive seq ranges, ascending. */
  seqs: [number, number][]
  blocks: Map<number, number | undefined>
  blocksDropped: number
}

/** Compresses ascending numbers into inclusive ranges. */
const pushSeq = (ranges: [number, number][], seq: number): void => {
  const last = ranges[ranges.length - 1]
  if (last && seq === last[1] + 1) last[1] = seq
  else ranges.push([seq, seq])
}

/** A UUID-shaped id derived from `parts`, so the same records always make the same event id. */
export const stableId = (...parts: (string | number)[]): string => {
  const h = createHash('sha256').update(parts.join('\u0000')).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16] ?? '0', 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
}

export class Coalescer {
  private groups = new Map<string, Group>()
  private since: Date | undefined

  /** Records held. */
  get pending(): number {
    let n = 0
    for (const g of this.groups.values()) n += g.count
    return n
  }

  /** Groups held. */
  get size(): number {
    return this.groups.size
  }

  /** Time of the first record held, when any. */
  get pendingSince(): Date | undefined {
    return this.since
  }

  /** The largest group's count. */
  get largest(): number {
    let n = 0
    for (const g of this.groups.values()) n = Math.max(n, g.count)
    return n
  }

  static keyOf(i: Pick<CoalesceInput, 'kind' | 'class' | 'device'>): string {
    return `${i.kind}\u0000${i.device ?? 'unknown'}\u0000${i.class}`
  }

  add(input: CoalesceInput): void {
    const key = Coalescer.keyOf(input)
    this.since ??= input.time
    let g = this.groups.get(key)
    if (!g) {
      g = { input, count: 0, firstTime: input.time, lastTime: input.time, seqs: [], blocks: new Map(), blocksDropped: 0 }
      this.groups.set(key, g)
    }
    g.count++
    if (input.time < g.firstTime) g.firstTime = input.time
    if (input.time > g.lastTime) g.lastTime = input.time
    pushSeq(g.seqs, input.seq)
    if (input.block) {
      if (g.blocks.has(input.block.offset)) {
        if (input.block.size !== undefined) g.blocks.set(input.block.offset, input.block.size)
      } else if (g.blocks.size < MAX_BLOCKS_PER_EVENT) g.blocks.set(input.block.offset, input.block.size)
      else g.blocksDropped++
    }
  }

  /**
   * Every group as one event, in order of first seq, and empties the
   * coalescer. `bootId` makes the ids stable: re-reading the same records
   * after a crash yields the same ids, which the head node de-duplicates.
   */
  drain(node: string, bootId: string): EventOf<'squashfs-error' | 'io-error'>[] {
    const groups = [...this.groups.values()].sort((a, b) => (a.seqs[0]?.[0] ?? 0) - (b.seqs[0]?.[0] ?? 0))
    this.groups = new Map()
    this.since = undefined
    return groups.map((g) => {
      const firstSeq = g.seqs[0]?.[0] ?? 0
      const lastSeq = g.seqs[g.seqs.length - 1]?.[1] ?? 0
      const blocks = [...g.blocks.entries()].sort((a, b) => a[0] - b[0]).map(([offset, size]) => (size === undefined ? { offset } : { offset, size }))
      const data: KernelErrorData = {
        class: g.input.class,
        ...(g.input.device ? { device: g.input.device } : {}),
        message: g.input.message,
        ...g.input.fields,
        count: g.count,
        firstTime: g.firstTime.toISOString(),
        lastTime: g.lastTime.toISOString(),
        kmsg: { bootId, firstSeq, lastSeq, seqs: g.seqs },
        ...(blocks.length ? { blocks } : {}),
        ...(g.blocksDropped ? { blocksNotListed: g.blocksDropped } : {}),
      }
      return makeEvent(g.input.kind, node, data, {
        now: g.lastTime,
        id: stableId('kmsg', bootId, Coalescer.keyOf(g.input), firstSeq),
        ...(g.input.image ? { image: g.input.image } : {}),
      })
    })
  }
}
