/**
 * The consistency view (SPEC §10): per image name, which digests exist
 * (published, booted, reported), which nodes run which, who reported
 * integrity or squashfs errors, whose last boot failed or fell back — and a
 * flag on every name whose nodes disagree or whose served bytes no longer
 * hash to what was published. This is the one request that would have shown
 * the CSM projection incident (reference/image-projection-inconsistent.txt).
 *
 * Pure: the server gathers the store's and the nodes' state and calls it.
 */
import type { NameEntry, ObjectDrift } from './store.js'
import { type NodeView, runningImage } from './node-state.js'

export interface PublishedName {
  name: string
  current?: NameEntry
  history: NameEntry[]
  /** Store objects of this name that changed on disk since they were stored, with what they hash to now. */
  drift: StoreDrift[]
}

export interface StoreDrift extends ObjectDrift {
  /** sha256 of the bytes the store's file holds now (what the head serves under the old digest). */
  nowSha256?: string
}

export type FlagCode = 'mixed-digests' | 'unpublished-digest' | 'served-bytes-differ' | 'store-object-modified'

export interface Flag {
  code: FlagCode
  message: string
  digests: string[]
  nodes: string[]
}

export interface DigestView {
  sha256: string
  /** Ever published under this name. */
  published: boolean
  /** What the name points at now. */
  current: boolean
  publishedAt?: string
  /** Nodes whose last successful boot was this digest. */
  booted: string[]
  /** Nodes running this digest now (last status or last boot). */
  running: string[]
  /**
   * Nodes that asked for another digest of this name and were served bytes
   * hashing to this one: from whole-image integrity reports, or (for chunk
   * reports) because the head's own file for the asked digest now hashes here.
   */
  servedTo: string[]
  /** The head's store file published as another digest now holds these bytes. */
  inStoreAs?: string[]
}

export interface NameView {
  name: string
  current: string | null
  consistent: boolean
  flags: Flag[]
  digests: DigestView[]
  /** node → digest it runs now. */
  nodes: Record<string, string>
  integrityErrors: Array<{ node: string; time: string; expected?: string; found?: string; url?: string; chunk?: number }>
  squashfsErrors: Array<{ node: string; count: number; last?: string; sha256?: string }>
  failedBoots: Array<{ node: string; time: string; error?: string; sha256?: string }>
  fallbacks: Array<{ node: string; time: string; style?: string; requestedStyle?: string; fallbacks: Array<{ kind: string; reason: string }> }>
  storeDrift: StoreDrift[]
}

export interface ConsistencyView {
  schema: 1
  generatedAt: string
  /** Names with at least one flag. */
  inconsistent: string[]
  images: NameView[]
}

const sorted = (xs: Iterable<string>): string[] => [...new Set(xs)].sort()

export const computeConsistency = (published: PublishedName[], nodes: NodeView[], now = new Date()): ConsistencyView => {
  const byName = new Map<string, PublishedName>(published.map((p) => [p.name, p]))
  // Which name a digest belongs to when an event names only the digest.
  const nameOfDigest = new Map<string, string>()
  for (const p of published) for (const h of p.history) nameOfDigest.set(h.sha256, p.name)
  const nameFor = (img: { name?: string; sha256?: string } | undefined, ...digests: Array<string | undefined>): string | undefined => {
    if (img?.name) return img.name
    for (const d of [img?.sha256, ...digests]) if (d && nameOfDigest.has(d)) return nameOfDigest.get(d)
    return undefined
  }
  // Names seen in node reports but never published still get a view.
  for (const v of nodes) {
    for (const n of [v.lastBoot?.image?.name, v.lastStatus?.image?.name, ...v.integrity.map((r) => r.image?.name), v.squashfsErrors.image?.name]) {
      if (n && !byName.has(n)) byName.set(n, { name: n, history: [], drift: [] })
    }
  }

  const images: NameView[] = []
  for (const p of [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const digests = new Map<string, DigestView>()
    const digest = (sha: string): DigestView => {
      let d = digests.get(sha)
      if (!d) {
        d = { sha256: sha, published: false, current: false, booted: [], running: [], servedTo: [] }
        digests.set(sha, d)
      }
      return d
    }
    for (const h of p.history) {
      const d = digest(h.sha256)
      d.published = true
      d.publishedAt ??= h.time
    }
    if (p.current) digest(p.current.sha256).current = true

    const view: NameView = {
      name: p.name,
      current: p.current?.sha256 ?? null,
      consistent: true,
      flags: [],
      digests: [],
      nodes: {},
      integrityErrors: [],
      squashfsErrors: [],
      failedBoots: [],
      fallbacks: [],
      storeDrift: p.drift,
    }
    const served = new Map<string, { found: string; nodes: Set<string> }>()
    const chunkBad = new Map<string, Set<string>>()

    for (const v of nodes) {
      const boot = v.lastBoot
      if (boot && nameFor(boot.image) === p.name) {
        if (boot.result === 'ok' && boot.image?.sha256) digest(boot.image.sha256).booted.push(v.node)
        if (boot.result === 'failed') view.failedBoots.push({ node: v.node, time: boot.time, ...(boot.error ? { error: boot.error } : {}), ...(boot.image?.sha256 ? { sha256: boot.image.sha256 } : {}) })
        if (boot.fallbacks.length) {
          view.fallbacks.push({
            node: v.node,
            time: boot.time,
            fallbacks: boot.fallbacks,
            ...(boot.style ? { style: boot.style } : {}),
            ...(boot.requestedStyle ? { requestedStyle: boot.requestedStyle } : {}),
          })
        }
      }
      const run = runningImage(v)
      // Read back as `runs`, never as view.nodes[v.node]: a node id is an outside name (`constructor` would find Object's).
      const runs = run?.sha256 && nameFor(run) === p.name ? run.sha256 : undefined
      if (runs) {
        digest(runs).running.push(v.node)
        view.nodes[v.node] = runs
      }
      // A failed boot's EINTEGRITY only repeats a detailed integrity event when the node sent one.
      const detailed = new Set(v.integrity.filter((r) => !r.fromBoot && r.download).map((r) => r.image?.sha256))
      for (const r of v.integrity) {
        if (nameFor(r.image, r.expected) !== p.name) continue
        if (r.fromBoot && detailed.has(r.image?.sha256)) continue
        view.integrityErrors.push({
          node: v.node,
          time: r.time,
          ...(r.expected ? { expected: r.expected } : {}),
          ...(r.found ? { found: r.found } : {}),
          ...(r.url ? { url: r.url } : {}),
          ...(r.chunk !== undefined ? { chunk: r.chunk } : {}),
        })
        const wholeImage = r.chunk === undefined && r.expected !== undefined && r.found !== undefined
        if (!wholeImage && r.download) {
          // A chunk (or bytes we know no digest of) came wrong from a server:
          // the image served under this digest is not the one published.
          const image = r.image?.sha256
          if (!image) continue
          const s = chunkBad.get(image) ?? new Set<string>()
          s.add(v.node)
          chunkBad.set(image, s)
          continue
        }
        if (!wholeImage) continue // the node's own cached copy went bad: not about what is served
        const expected = r.expected ?? r.image?.sha256
        if (!expected) continue
        if (r.found && r.found !== expected) {
          digest(r.found).servedTo.push(v.node)
          const key = `${expected}>${r.found}`
          const s = served.get(key) ?? { found: r.found, nodes: new Set<string>() }
          s.nodes.add(v.node)
          served.set(key, s)
        }
      }
      if (v.squashfsErrors.count > 0 && nameFor(v.squashfsErrors.image, runs) === p.name) {
        view.squashfsErrors.push({
          node: v.node,
          count: v.squashfsErrors.count,
          ...(v.squashfsErrors.last ? { last: v.squashfsErrors.last } : {}),
          ...(v.squashfsErrors.image?.sha256 ?? runs ? { sha256: v.squashfsErrors.image?.sha256 ?? runs } : {}),
        })
      }
    }

    const runningDigests = [...digests.values()].filter((d) => d.running.length > 0)
    if (runningDigests.length > 1) {
      view.flags.push({
        code: 'mixed-digests',
        message: `nodes run ${runningDigests.length} different digests of ${p.name}: ${runningDigests.map((d) => `${d.sha256.slice(0, 12)}… on ${d.running.length} node(s)`).join(', ')}`,
        digests: runningDigests.map((d) => d.sha256),
        nodes: sorted(runningDigests.flatMap((d) => d.running)),
      })
    }
    const unpublished = [...digests.values()].filter((d) => !d.published && (d.running.length > 0 || d.booted.length > 0))
    if (unpublished.length && p.history.length) {
      view.flags.push({
        code: 'unpublished-digest',
        message: `nodes run digests never published as ${p.name}: ${unpublished.map((d) => d.sha256).join(', ')}`,
        digests: unpublished.map((d) => d.sha256),
        nodes: sorted(unpublished.flatMap((d) => [...d.running, ...d.booted])),
      })
    }
    for (const [key, s] of served) {
      const expected = key.split('>')[0] ?? ''
      view.flags.push({
        code: 'served-bytes-differ',
        message: `bytes served for ${p.name} ${expected} hash to ${s.found} (reported by ${sorted(s.nodes).join(', ')}): the image was changed under its name`,
        digests: [expected, s.found],
        nodes: sorted(s.nodes),
      })
    }
    const nowOf = new Map(p.drift.filter((d) => d.nowSha256).map((d) => [d.sha256, d.nowSha256 as string]))
    for (const [expected, ns] of chunkBad) {
      const now = nowOf.get(expected)
      if (now && now !== expected) for (const n of ns) digest(now).servedTo.push(n)
      view.flags.push({
        code: 'served-bytes-differ',
        message:
          `bytes served for ${p.name} ${expected} do not match its manifest (reported by ${sorted(ns).join(', ')})` +
          (now && now !== expected ? `; the head's file for it now hashes to ${now}` : ''),
        digests: now && now !== expected ? [expected, now] : [expected],
        nodes: sorted(ns),
      })
    }
    for (const d of p.drift) {
      const changed = d.nowSha256 !== undefined && d.nowSha256 !== d.sha256
      if (changed) {
        const now = digest(d.nowSha256 as string)
        now.inStoreAs = sorted([...(now.inStoreAs ?? []), d.sha256])
      }
      if (d.nowSha256 === d.sha256) continue // touched, same bytes: not a problem
      view.flags.push({
        code: 'store-object-modified',
        message:
          d.found === 'missing'
            ? `the store's file for ${p.name} ${d.sha256} is missing`
            : `the store's file for ${p.name} ${d.sha256} was written after it was stored` + (changed ? ` and now holds ${d.nowSha256}` : ' (size, mtime or inode changed)'),
        digests: changed ? [d.sha256, d.nowSha256 as string] : [d.sha256],
        nodes: [],
      })
    }
    for (const d of digests.values()) {
      d.booted.sort()
      d.running.sort()
      d.servedTo = sorted(d.servedTo)
    }
    view.digests = [...digests.values()].sort((a, b) => Number(b.current) - Number(a.current) || a.sha256.localeCompare(b.sha256))
    view.consistent = view.flags.length === 0
    images.push(view)
  }
  return { schema: 1, generatedAt: now.toISOString(), inconsistent: images.filter((i) => !i.consistent).map((i) => i.name), images }
}
