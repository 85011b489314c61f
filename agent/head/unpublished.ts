/**
 * Image names a nodes file gives out that the store has never published:
 * such a file loads (a name may be published after it), but every node given
 * that name would be refused its boot descriptor, so the head warns at load
 * and at each reload, naming where the name appears (issue #21).
 */
import type { NodesConfig, Settings } from './nodes-config.js'
import type { ImageStore } from './store.js'

/** One place in the nodes file naming an image the store does not have. */
export interface UnpublishedImage {
  /** `defaults`, `architectures.aarch64`, `groups.gpu` or `nodes.n0001`. */
  where: string
  image: string
}

/** Every place in `config` naming an image name that `store` has no current digest for, in file order. */
export const unpublishedImages = async (config: NodesConfig, store: Pick<ImageStore, 'current'>): Promise<UnpublishedImage[]> => {
  const places: Array<[string, Settings]> = [
    ['defaults', config.defaults],
    ...Object.entries(config.architectures).map(([a, s]): [string, Settings] => [`architectures.${a}`, s ?? {}]),
    ...Object.entries(config.groups).map(([g, s]): [string, Settings] => [`groups.${g}`, s]),
    ...Object.entries(config.nodes).map(([n, s]): [string, Settings] => [`nodes.${n}`, s]),
  ]
  const known = new Map<string, boolean>()
  const out: UnpublishedImage[] = []
  for (const [where, s] of places) {
    const name = s.image?.name
    if (!name) continue
    if (!known.has(name)) known.set(name, (await store.current(name).catch(() => undefined)) !== undefined)
    if (!known.get(name)) out.push({ where, image: name })
  }
  return out
}
