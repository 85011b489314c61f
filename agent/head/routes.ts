/**
 * The head node's endpoints (docs/protocol.md) as one table: which method and
 * path reach which handler, which names are checked before anything is looked
 * up, and where only reads are allowed. The handlers themselves are the
 * server's (agent/head/server.ts); a test passes its own to see the routing.
 */
import { HttpProblem } from './http-util.js'
import { isSha256, nameProblem } from './names.js'
import { READ_METHODS, type RouteTable } from './router.js'

/** One handler per endpoint. */
export interface HeadHandlers<H> {
  /** `GET /v1`: the protocol and its version. */
  root: H
  consistency: H
  /** `GET /v1/nodes/:node`: what the head knows of a node. */
  node: H
  /** `GET /v1/nodes`: every node, one row each (`boot-agent nodes`). */
  nodes: H
  /** `GET /v1/nodes/:node/boot`: the boot descriptor. */
  descriptor: H
  /** `POST /v1/nodes/:node/events`. */
  events: H
  /** `GET /v1/images`: every name and its current digest. */
  images: H
  imageName: H
  manifestByName: H
  manifestByDigest: H
  imageBytes: H
  /** `GET /metrics`: Prometheus exposition (agent/head/metrics.ts); outside /v1, where scrapers look. */
  metrics?: H
}

/** Paths answered outside the versioned API (parseTarget lets exactly these through). */
export const UNVERSIONED_PATHS: readonly string[] = ['/metrics']

/** A name that becomes part of a store path, refused (400) unless safe; never cleaned up. */
const checkName =
  (what: string) =>
  (v: string): string => {
    const problem = nameProblem(v)
    if (problem) throw new HttpProblem(400, 'EBADNAME', `${what} ${JSON.stringify(v)} ${problem}`, { details: { field: what } })
    return v
  }

const checkDigest = (v: string): string => {
  if (!isSha256(v)) throw new HttpProblem(400, 'EBADDIGEST', `digest ${JSON.stringify(v)} is not 64 lower-case hex digits`)
  return v
}

/** The head's route table over the given handlers. */
export const headRoutes = <H>(h: HeadHandlers<H>): RouteTable<H> => ({
  params: { node: checkName('node id'), image: checkName('image name'), digest: checkDigest },
  // Checked before any route is chosen, so a bad name is refused wherever it
  // appears, and the image tree is read-only whatever path is asked for.
  guards: [
    { path: '/v1/nodes/:node/**' },
    { path: '/v1/images/**', methods: READ_METHODS },
    { path: '/v1/images/by-digest/:digest/*' },
    { path: '/v1/images/:image/**' },
  ],
  routes: [
    { name: 'root', methods: READ_METHODS, path: '/v1', handler: h.root },
    { name: 'root', methods: READ_METHODS, path: '/v1/', handler: h.root },
    { name: 'consistency', methods: READ_METHODS, path: '/v1/consistency', handler: h.consistency },
    { name: 'node', methods: READ_METHODS, path: '/v1/nodes/:node', handler: h.node },
    { name: 'nodes', methods: READ_METHODS, path: '/v1/nodes', handler: h.nodes },
    { name: 'descriptor', methods: READ_METHODS, path: '/v1/nodes/:node/boot', handler: h.descriptor },
    { name: 'events', methods: ['POST'], path: '/v1/nodes/:node/events', handler: h.events },
    { name: 'images', methods: READ_METHODS, path: '/v1/images', handler: h.images },
    { name: 'manifest', methods: READ_METHODS, path: '/v1/images/by-digest/:digest/manifest', handler: h.manifestByDigest },
    { name: 'image', methods: READ_METHODS, path: '/v1/images/by-digest/:digest/image', handler: h.imageBytes },
    { name: 'image-name', methods: READ_METHODS, path: '/v1/images/:image', handler: h.imageName },
    { name: 'manifest', methods: READ_METHODS, path: '/v1/images/:image/manifest', handler: h.manifestByName },
    ...(h.metrics ? [{ name: 'metrics', methods: READ_METHODS, path: '/metrics', handler: h.metrics }] : []),
  ],
})
