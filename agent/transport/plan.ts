/**
 * Which bytes to ask for: runs of consecutive missing chunks become single
 * `Range` requests (zsync-style), split at chunk boundaries so no request is
 * longer than `maxRangeBytes`; and which chunk holds a byte. Pure.
 */
import type { Chunk } from '../manifest/types.js'

export interface RangeTask {
  /** First byte (inclusive). */
  start: number
  /** Last byte + 1. */
  end: number
  /** Chunk indexes covered, consecutive. */
  chunks: number[]
}

export const planRanges = (chunks: readonly Chunk[], missing: readonly number[], maxRangeBytes: number): RangeTask[] => {
  const sorted = [...new Set(missing)].sort((a, b) => a - b)
  const out: RangeTask[] = []
  let cur: RangeTask | undefined
  for (const i of sorted) {
    const c = chunks[i]
    if (!c) continue
    if (cur && cur.end === c.offset && cur.end - cur.start + c.size <= maxRangeBytes) {
      cur.end += c.size
      cur.chunks.push(i)
      continue
    }
    cur = { start: c.offset, end: c.offset + c.size, chunks: [i] }
    out.push(cur)
  }
  return out
}

/** Index of the chunk holding byte `pos` (binary search: a 2 GiB image has ~30,000 chunks). */
export const chunkAt = (chunks: readonly Chunk[], pos: number): number => {
  let lo = 0
  let hi = chunks.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (chunks[mid]!.offset <= pos) lo = mid
    else hi = mid - 1
  }
  return lo
}
