/**
 * Which objects to evict: a pure decision (SPEC §5). Least recently used go
 * first; pinned objects (the image being booted and the previous one) never.
 */

export interface EvictionCandidate {
  sha256: string
  size: number
  /** ms since the epoch. */
  lastUsedAt: number
}

export interface EvictionGoal {
  /** Free at least this many more bytes (0: only enforce `keep`). */
  needBytes?: number
  /** Keep at most this many objects (pinned ones count). */
  keep?: number
  /** Never evicted. */
  pinned?: readonly string[]
}

/** The objects to remove, in order, to meet the goal as far as possible. */
export const planEviction = (objects: readonly EvictionCandidate[], goal: EvictionGoal): EvictionCandidate[] => {
  const pinned = new Set(goal.pinned ?? [])
  const lru = objects.filter((o) => !pinned.has(o.sha256)).sort((a, b) => a.lastUsedAt - b.lastUsedAt || a.sha256.localeCompare(b.sha256))
  const out: EvictionCandidate[] = []
  let freed = 0
  let count = objects.length
  for (const o of lru) {
    const needSpace = (goal.needBytes ?? 0) > freed
    const needCount = goal.keep !== undefined && count > goal.keep
    if (!needSpace && !needCount) break
    out.push(o)
    freed += o.size
    count--
  }
  return out
}
