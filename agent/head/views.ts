/**
 * The head's read-only answers about nodes and names: what it knows of one
 * node (`GET /v1/nodes/:node`), the published names (`GET /v1/images`,
 * `GET /v1/images/:image`), and the store's side of the consistency view
 * (`GET /v1/consistency`; the view itself is agent/head/consistency.ts).
 */
import type { Clock } from '../core/clock.js'
import { computeConsistency, type ConsistencyView, type PublishedName, type StoreDrift } from './consistency.js'
import { HttpProblem } from './http-util.js'
import { type NodeStates, runningImage } from './node-state.js'
import { configuredNode, type NodesConfig, resolvePlan } from './nodes-config.js'
import { hashFile, type ImageStore } from './store.js'

/**
 * What the head knows of `node`: its plan from the nodes file (when it has
 * one) and what its events said. 404 ENONODE when the node is neither in the
 * nodes file nor has sent events. `events` is how many it has stored.
 */
export const nodeView = (config: NodesConfig, states: Pick<NodeStates, 'get'>, node: string, events: number): Record<string, unknown> => {
  const configured = configuredNode(config, node)
  const v = states.get(node)
  if (!configured && !v) throw new HttpProblem(404, 'ENONODE', `node ${JSON.stringify(node)} is not in the nodes file and has sent no events`)
  const plan = resolvePlan(config, node)
  return {
    schema: 1,
    node,
    configured: Boolean(configured),
    ...(plan.ok ? { plan: { style: plan.plan.style, image: plan.plan.image, arch: plan.plan.arch ?? null } } : {}),
    running: v ? (runningImage(v) ?? null) : null,
    lastBoot: v?.lastBoot ?? null,
    lastStatus: v?.lastStatus ?? null,
    lastFallback: v?.lastFallback ?? null,
    lastEventAt: v?.lastEventAt ?? null,
    events,
    integrity: { count: v?.integrityCount ?? 0, recent: v?.integrity ?? [] },
    squashfsErrors: v?.squashfsErrors ?? { count: 0 },
    ioErrors: v?.ioErrors ?? { count: 0 },
    lost: v?.lost ?? 0,
  }
}

/** Every published name with its current entry. */
export const imageList = async (store: ImageStore): Promise<{ images: Array<{ name: string; current: unknown }> }> => {
  const list = []
  for (const name of await store.names()) list.push({ name, current: (await store.current(name)) ?? null })
  return { images: list }
}

/** A name's current entry and history; 404 ENOIMAGE when it was never published. */
export const imageHistory = async (store: ImageStore, name: string): Promise<Record<string, unknown>> => {
  const history = await store.history(name)
  if (!history.length) throw new HttpProblem(404, 'ENOIMAGE', `image ${name} was never published`)
  return { name, current: (await store.current(name)) ?? null, history }
}

/**
 * The consistency view's inputs from the store: every name with its history,
 * current entry and drifted objects. A changed object is hashed once per
 * (inode, size, mtime), kept in `hashed`: what the head serves now.
 */
export const publishedNames = async (store: ImageStore, hashed: Map<string, string>): Promise<PublishedName[]> => {
  const published: PublishedName[] = []
  for (const name of await store.names()) {
    const history = await store.history(name)
    const current = await store.current(name)
    const drift: StoreDrift[] = []
    for (const sha of new Set(history.map((h) => h.sha256))) {
      const d = await store.drift(sha)
      if (!d) continue
      if (d.found === 'missing') {
        drift.push(d)
        continue
      }
      const key = `${sha}:${d.found.ino}:${d.found.size}:${d.found.mtimeMs}`
      let now = hashed.get(key)
      if (!now) {
        now = await hashFile(store.objectPath(sha)).catch(() => undefined)
        if (now) hashed.set(key, now)
      }
      drift.push({ ...d, ...(now ? { nowSha256: now } : {}) })
    }
    published.push({ name, history, drift, ...(current ? { current } : {}) })
  }
  return published
}

/** The consistency view, generated at `clock`'s time once the store has been read. */
export const consistencyView = async (store: ImageStore, states: Pick<NodeStates, 'all'>, hashed: Map<string, string>, clock: Clock): Promise<ConsistencyView> => {
  const published = await publishedNames(store, hashed)
  return computeConsistency(published, states.all(), new Date(clock.now()))
}

/** One row of `GET /v1/nodes`: what an operator scans a cluster for. */
export interface NodeRow {
  node: string
  /** Listed in the nodes file (a node that is not has still sent events). */
  configured: boolean
  /** The image the nodes file gives it (`NAME` or `NAME@sha256:HEX`), when its plan resolves. */
  image: string | null
  /** The digest it runs now (its last status or successful boot), or null. */
  running: string | null
  lastBoot: { time: string; result: 'ok' | 'failed'; style: string | null; cacheHit: boolean | null; error: string | null } | null
  /** Fallbacks of its last boot, as `kind: reason`. */
  fallbacks: string[]
  errors: { integrity: number; squashfs: number; io: number; lost: number }
  lastEventAt: string | null
  events: number
}

/**
 * Every node the head knows (`GET /v1/nodes`): those in the nodes file and
 * those that sent events, sorted by id. `events(node)` is how many it stored.
 */
export const nodesView = (config: NodesConfig, states: Pick<NodeStates, 'get' | 'all'>, events: (node: string) => number): { schema: 1; nodes: NodeRow[] } => {
  const ids = new Set([...Object.keys(config.nodes), ...states.all().map((v) => v.node)])
  const rows = [...ids].sort().map((node): NodeRow => {
    const v = states.get(node)
    const plan = resolvePlan(config, node)
    const boot = v?.lastBoot
    return {
      node,
      configured: Boolean(configuredNode(config, node)),
      image: plan.ok ? plan.plan.image.name + (plan.plan.image.sha256 ? `@sha256:${plan.plan.image.sha256}` : '') : null,
      running: (v && runningImage(v)?.sha256) ?? null,
      lastBoot: boot ? { time: boot.time, result: boot.result, style: boot.style ?? null, cacheHit: boot.cacheHit ?? null, error: boot.error ?? null } : null,
      fallbacks: (boot?.fallbacks ?? []).map((f) => `${f.kind}: ${f.reason}`),
      errors: { integrity: v?.integrityCount ?? 0, squashfs: v?.squashfsErrors.count ?? 0, io: v?.ioErrors.count ?? 0, lost: v?.lost ?? 0 },
      lastEventAt: v?.lastEventAt ?? null,
      events: events(node),
    }
  })
  return { schema: 1, nodes: rows }
}
