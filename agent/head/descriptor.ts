/**
 * The boot descriptor a node is handed (`GET /v1/nodes/:node/boot`, SPEC §10):
 * which plan the nodes file gives it, which published digest that plan means
 * (a pinned one from the name's history, otherwise the name's current one),
 * and a refusal when the image's architecture is not the node's. The
 * decisions are pure; {@link describeNode} only looks the entry up between them.
 */
import { HttpProblem, isHttpProblemCode } from './http-util.js'
import { type Architecture, normaliseArch } from './names.js'
import { type BootPlan, imageOverrides, type NodesConfig, resolvePlan } from './nodes-config.js'
import { imagePathFor, manifestPathFor } from './publish.js'
import type { ImageStore, NameEntry } from './store.js'

/** The descriptor as sent (docs/protocol.md). */
export interface Descriptor {
  schema: 1
  node: string
  style: BootPlan['style']
  /** `mirrors`: the plan's mirror bases turned into by-digest image URLs, in the plan's order. */
  image: { name: string; sha256: string; size: number; arch: Architecture; manifest: string; mirrors?: string[] }
  partitions: BootPlan['partitions']
  policies: BootPlan['policies']
}

/**
 * The plan for `node`; `archParam` is the node's own `?arch=` (null when
 * absent). 400 EBADARCH for an architecture the head does not know, else
 * whatever {@link resolvePlan} refuses (404 ENONODE / ENOIMAGE, 409 EARCH).
 */
export const planFor = (config: NodesConfig, node: string, archParam: string | null): BootPlan => {
  const reported = archParam === null ? undefined : normaliseArch(archParam)
  if (archParam !== null && !reported) throw new HttpProblem(400, 'EBADARCH', `arch ${JSON.stringify(archParam)} is not an architecture the head node knows`)
  const r = resolvePlan(config, node, reported)
  if (!r.ok) throw new HttpProblem(r.status, isHttpProblemCode(r.code) ? r.code : 'EINTERNAL', r.message)
  return r.plan
}

/**
 * The descriptor for `plan`, given the store entry it asked for (`entry`:
 * the pinned digest's history entry, or the name's current one; undefined
 * when there is none). 404 ENOIMAGE without an entry; 409 EARCH when the
 * image's architecture (the nodes file's `images` first, else the store's)
 * is not the node's.
 */
export const descriptorFor = (config: NodesConfig, plan: BootPlan, entry: NameEntry | undefined): Descriptor => {
  const { node } = plan
  const name = plan.image.name
  if (!entry) {
    throw new HttpProblem(
      404,
      'ENOIMAGE',
      plan.image.sha256
        ? `image ${name}@sha256:${plan.image.sha256} (pinned for ${node}) was never published under that name`
        : `image ${name} (for node ${node}, from ${plan.imageFrom}) is not published in the store`,
    )
  }
  const imageArch = imageOverrides(config, name)?.arch ?? entry.arch
  if (plan.arch && plan.arch !== imageArch) {
    throw new HttpProblem(409, 'EARCH', `image ${name} is ${imageArch} but node ${node} is ${plan.arch}; refusing to hand it out`, {
      details: { imageArch, nodeArch: plan.arch },
    })
  }
  return {
    schema: 1,
    node,
    style: plan.style,
    image: {
      name,
      sha256: entry.sha256,
      size: entry.size,
      arch: imageArch,
      manifest: manifestPathFor(entry.sha256),
      ...(plan.mirrors ? { mirrors: plan.mirrors.map((base) => `${base}${imagePathFor(entry.sha256)}`) } : {}),
    },
    partitions: plan.partitions,
    policies: plan.policies,
  }
}

/** The store entry `plan` asks for: its pinned digest in the name's history, else the name's current entry. */
export const entryFor = async (store: Pick<ImageStore, 'history' | 'current'>, plan: BootPlan): Promise<NameEntry | undefined> => {
  const pinned = plan.image.sha256
  if (pinned) return (await store.history(plan.image.name)).find((h) => h.sha256 === pinned)
  return store.current(plan.image.name)
}

/** {@link planFor}, {@link entryFor}, {@link descriptorFor}: the whole answer to a node asking how to boot. */
export const describeNode = async (config: NodesConfig, store: Pick<ImageStore, 'history' | 'current'>, node: string, archParam: string | null): Promise<Descriptor> => {
  const plan = planFor(config, node, archParam)
  return descriptorFor(config, plan, await entryFor(store, plan))
}
