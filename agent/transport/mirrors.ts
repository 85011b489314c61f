/**
 * Node-specific mirror order (rendezvous hashing on node id + URL): each
 * node has a stable order, different nodes start on different mirrors so a
 * boot storm is spread, and losing one mirror moves only its own nodes.
 */
import { createHash } from 'node:crypto'

const score = (seed: string, url: string): string => createHash('sha256').update(seed).update('\0').update(url).digest('hex')

/** `urls` ordered for node `nodeId` (the same input always gives the same order). */
export const orderMirrors = (urls: readonly string[], nodeId: string): string[] =>
  [...new Set(urls)].map((u) => ({ u, s: score(nodeId, u) })).sort((a, b) => (a.s < b.s ? -1 : a.s > b.s ? 1 : 0)).map((x) => x.u)

/** A small deterministic PRNG (mulberry32) for jitter seeded by node id. */
export const seededRandom = (seed: string): (() => number) => {
  let a = createHash('sha256').update(seed).digest().readUInt32LE(0)
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The URLs a node fetches an image from: `first` as given (a group's ordered
 * mirrors: its rack cache, then the head), then the manifest's `urls` in this
 * node's rendezvous order as the fallback, each URL once.
 */
export const mirrorList = (first: readonly string[], manifestUrls: readonly string[], nodeId: string): string[] => [
  ...new Set([...first, ...orderMirrors(manifestUrls, nodeId)]),
]
