/**
 * The nodes file: which image, boot style, partitions and policies each node
 * gets (SPEC §3, §10). Parsed from `unknown` with an error naming the field;
 * resolution is a pure function from (config, node, architecture) to a plan.
 *
 * ```json
 * {
 *   "schema": 1,
 *   "defaults": { "image": "CPE-base", "style": "disked",
 *                 "partitions": { "cache": "LABEL=cwcache", "root": "LABEL=cwroot" },
 *                 "policies": { "cacheFull": "ram", "verify": "fast", "onfail": "reboot", "rootMode": "overlay" } },
 *   "architectures": { "aarch64": { "image": "CPE-base-arm" } },
 *   "groups": { "gpu": { "image": "CPE-gpu", "style": "rwram",
 *                        "mirrors": ["http://rack7-cache:8080", "http://head:8080"] } },
 *   "nodes": { "n0001": {}, "n0002": { "group": "gpu" },
 *              "n0003": { "arch": "aarch64" }, "n0004": { "image": "CPE-base@sha256:<hex>" } },
 *   "images": { "CPE-base-arm": { "arch": "aarch64" } }
 * }
 * ```
 * Most specific wins, field by field: node, then its group, then its
 * architecture, then defaults. Only nodes listed under `nodes` are known:
 * every lookup of a node id, group or image name is of the object's own
 * entries ({@link ownEntry}), so `constructor` or `toString` is a name like
 * any other, never Object.prototype's.
 */
import { ConfigError } from '../core/errors.js'
import { type Architecture, ARCHITECTURES, isSha256, nameProblem, normaliseArch, ownEntry } from './names.js'
import { checkDistinctCredentials, parseAddresses, parseTokenSha256 } from './node-identity.js'

export const BOOT_STYLES = ['disked', 'rwram', 'roram'] as const
export type BootStyle = (typeof BOOT_STYLES)[number]
export const CACHE_FULL_POLICIES = ['ram', 'clear-reboot'] as const
export const VERIFY_POLICIES = ['fast', 'strong'] as const
export const ONFAIL_POLICIES = ['reboot', 'emergency', 'shell'] as const
/** How a disked node makes its root (the node's `rd.bootagent.rootmode`). */
export const ROOT_MODE_POLICIES = ['overlay', 'unpack'] as const

export interface Partitions {
  cache?: string
  root?: string
}

export interface Policies {
  cacheFull?: (typeof CACHE_FULL_POLICIES)[number]
  verify?: (typeof VERIFY_POLICIES)[number]
  onfail?: (typeof ONFAIL_POLICIES)[number]
  rootMode?: (typeof ROOT_MODE_POLICIES)[number]
  /** Parallel Range requests for the image (1–{@link MAX_STREAMS}). */
  streams?: number
}

/** Most parallel Range requests a policy may ask of a node (the agent's own bound). */
export const MAX_STREAMS = 16
/** Most mirrors one group may list. */
export const MAX_MIRRORS = 16

/** An image by name (follows the name) or pinned to one digest (`NAME@sha256:HEX`). */
export interface ImageRef {
  name: string
  sha256?: string
}

export interface Settings {
  image?: ImageRef
  style?: BootStyle
  partitions?: Partitions
  policies?: Policies
  /**
   * Base URLs (`http://rack7-cache:8080`) serving the head's
   * `/v1/images/by-digest/…` paths, in the order a node tries them: its rack
   * cache first, the head last. Most specific layer wins as a whole list.
   */
  mirrors?: string[]
}

export interface NodeEntry extends Settings {
  group?: string
  arch?: Architecture
  /** Addresses/CIDRs this node may speak from (node-identity.ts); replaces its group's. */
  addresses?: string[]
  /** sha256 (hex) of this node's own bearer token (node-identity.ts). */
  tokenSha256?: string
}

/** A group's settings, and the addresses its nodes may speak from (node-identity.ts). */
export interface GroupEntry extends Settings {
  addresses?: string[]
}

export interface NodesConfig {
  schema: 1
  defaults: Settings
  architectures: Partial<Record<Architecture, Settings>>
  groups: Record<string, GroupEntry>
  nodes: Record<string, NodeEntry>
  /** Per image name: overrides of what the store says (today: its architecture). */
  images: Record<string, { arch?: Architecture }>
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

const oneOf = <T extends string>(field: string, v: unknown, allowed: readonly T[]): T | undefined => {
  if (v === undefined) return undefined
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new ConfigError(field, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(v)})`)
  }
  return v as T
}

// A partition spec goes onto a kernel-style command line and into mount(8):
// one token, a known tag or a /dev path.
const PARTITION_SPEC = /^(?:(?:LABEL|UUID|PARTLABEL|PARTUUID)=[^\s"'\\]{1,200}|\/dev\/[A-Za-z0-9._/-]{1,200})$/

const parsePartitions = (field: string, v: unknown): Partitions | undefined => {
  if (v === undefined) return undefined
  if (!isRecord(v)) throw new ConfigError(field, 'must be an object {cache?, root?}')
  const out: Partitions = {}
  for (const [k, spec] of Object.entries(v)) {
    if (k !== 'cache' && k !== 'root') throw new ConfigError(`${field}.${k}`, 'unknown partition (expected cache or root)')
    if (typeof spec !== 'string' || !PARTITION_SPEC.test(spec) || spec.includes('..')) {
      throw new ConfigError(`${field}.${k}`, `must be LABEL=, UUID=, PARTLABEL=, PARTUUID= or a /dev path (got ${JSON.stringify(spec)})`)
    }
    out[k] = spec
  }
  return out
}

const parsePolicies = (field: string, v: unknown): Policies | undefined => {
  if (v === undefined) return undefined
  if (!isRecord(v)) throw new ConfigError(field, 'must be an object {cacheFull?, verify?, onfail?, rootMode?}')
  for (const k of Object.keys(v)) {
    if (!['cacheFull', 'verify', 'onfail', 'rootMode', 'streams'].includes(k)) throw new ConfigError(`${field}.${k}`, 'unknown policy (expected cacheFull, verify, onfail, rootMode or streams)')
  }
  const out: Policies = {}
  const cacheFull = oneOf(`${field}.cacheFull`, v.cacheFull, CACHE_FULL_POLICIES)
  const verify = oneOf(`${field}.verify`, v.verify, VERIFY_POLICIES)
  const onfail = oneOf(`${field}.onfail`, v.onfail, ONFAIL_POLICIES)
  if (cacheFull) out.cacheFull = cacheFull
  if (verify) out.verify = verify
  if (onfail) out.onfail = onfail
  const rootMode = oneOf(`${field}.rootMode`, v.rootMode, ROOT_MODE_POLICIES)
  if (rootMode) out.rootMode = rootMode
  if (v.streams !== undefined) {
    if (typeof v.streams !== 'number' || !Number.isInteger(v.streams) || v.streams < 1 || v.streams > MAX_STREAMS) {
      throw new ConfigError(`${field}.streams`, `must be a whole number from 1 to ${MAX_STREAMS} (got ${JSON.stringify(v.streams)})`)
    }
    out.streams = v.streams
  }
  return out
}

/** A list of mirror base URLs: absolute http(s), no credentials, query or fragment; kept without a trailing slash. */
const parseMirrors = (field: string, v: unknown): string[] | undefined => {
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_MIRRORS) throw new ConfigError(field, `must be a list of 1 to ${MAX_MIRRORS} base URLs, rack cache first, head last`)
  return v.map((u, i) => {
    let url: URL | undefined
    try {
      url = typeof u === 'string' ? new URL(u) : undefined
    } catch {
      url = undefined
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || url.search || url.hash) {
      throw new ConfigError(`${field}[${i}]`, `must be an http(s) base URL without credentials, query or fragment (got ${JSON.stringify(u)})`)
    }
    return url.toString().replace(/\/+$/, '')
  }).map((u, i, all) => {
    // Twice in one list: a dead mirror would be waited on twice before the next.
    if (all.indexOf(u) !== i) throw new ConfigError(`${field}[${i}]`, `${JSON.stringify(u)} is already ${field}[${all.indexOf(u)}]: list each mirror once`)
    return u
  })
}

/** Parses `NAME` or `NAME@sha256:HEX`. */
export const parseImageRef = (field: string, v: unknown): ImageRef => {
  if (typeof v !== 'string') throw new ConfigError(field, 'must be an image name or NAME@sha256:HEX')
  const at = v.indexOf('@')
  const name = at < 0 ? v : v.slice(0, at)
  const problem = nameProblem(name)
  if (problem) throw new ConfigError(field, `image name ${JSON.stringify(name)} ${problem}`)
  if (at < 0) return { name }
  const pin = v.slice(at + 1)
  const sha = pin.startsWith('sha256:') ? pin.slice(7) : ''
  if (!isSha256(sha)) throw new ConfigError(field, `pin ${JSON.stringify(pin)} must be sha256: and 64 lower-case hex digits`)
  return { name, sha256: sha }
}

const SETTING_KEYS = ['image', 'style', 'partitions', 'policies', 'mirrors']

const parseSettings = (field: string, v: unknown, extra: string[] = []): Settings => {
  if (!isRecord(v)) throw new ConfigError(field, 'must be an object')
  for (const k of Object.keys(v)) {
    if (!SETTING_KEYS.includes(k) && !extra.includes(k)) throw new ConfigError(`${field}.${k}`, `unknown key (expected ${[...SETTING_KEYS, ...extra].join(', ')})`)
  }
  const out: Settings = {}
  if (v.image !== undefined) out.image = parseImageRef(`${field}.image`, v.image)
  const style = oneOf(`${field}.style`, v.style, BOOT_STYLES)
  if (style) out.style = style
  const partitions = parsePartitions(`${field}.partitions`, v.partitions)
  if (partitions) out.partitions = partitions
  const policies = parsePolicies(`${field}.policies`, v.policies)
  if (policies) out.policies = policies
  const mirrors = parseMirrors(`${field}.mirrors`, v.mirrors)
  if (mirrors) out.mirrors = mirrors
  return out
}

const parseArch = (field: string, v: unknown): Architecture => {
  const arch = normaliseArch(v)
  if (!arch) throw new ConfigError(field, `unknown architecture ${JSON.stringify(v)} (expected one of ${ARCHITECTURES.join(', ')})`)
  return arch
}

const checkKey = (field: string, key: string): void => {
  const problem = nameProblem(key)
  if (problem) throw new ConfigError(field, `${JSON.stringify(key)} ${problem}`)
}

const TOP_KEYS = ['schema', 'defaults', 'architectures', 'groups', 'nodes', 'images']

/** Turns the parsed JSON of a nodes file into a config, or throws a ConfigError naming the field. */
export const parseNodesConfig = (v: unknown): NodesConfig => {
  if (!isRecord(v)) throw new ConfigError('nodes file', 'must be a JSON object')
  for (const k of Object.keys(v)) {
    // Quoted: an empty or odd key must still show in the message.
    if (!TOP_KEYS.includes(k)) throw new ConfigError(JSON.stringify(k), `unknown top-level key (expected ${TOP_KEYS.join(', ')})`)
  }
  if (v.schema !== 1) throw new ConfigError('schema', `must be 1 (got ${JSON.stringify(v.schema)})`)
  const defaults = v.defaults === undefined ? {} : parseSettings('defaults', v.defaults)
  const architectures: NodesConfig['architectures'] = {}
  if (v.architectures !== undefined) {
    if (!isRecord(v.architectures)) throw new ConfigError('architectures', 'must be an object keyed by architecture')
    for (const [k, s] of Object.entries(v.architectures)) architectures[parseArch(`architectures.${k}`, k)] = parseSettings(`architectures.${k}`, s)
  }
  const groups: NodesConfig['groups'] = {}
  if (v.groups !== undefined) {
    if (!isRecord(v.groups)) throw new ConfigError('groups', 'must be an object keyed by group name')
    for (const [k, s] of Object.entries(v.groups)) {
      checkKey(`groups.${k}`, k)
      const group: GroupEntry = parseSettings(`groups.${k}`, s, ['addresses'])
      const addresses = (s as Record<string, unknown>).addresses
      if (addresses !== undefined) group.addresses = parseAddresses(`groups.${k}.addresses`, addresses)
      groups[k] = group
    }
  }
  if (!isRecord(v.nodes)) throw new ConfigError('nodes', 'must be an object keyed by node id')
  const nodes: NodesConfig['nodes'] = {}
  for (const [k, s] of Object.entries(v.nodes)) {
    checkKey(`nodes.${k}`, k)
    // null: a node with no settings of its own (read as {}, for the group and arch checks too).
    const raw = (s ?? {}) as Record<string, unknown>
    const entry: NodeEntry = parseSettings(`nodes.${k}`, raw, ['group', 'arch', 'addresses', 'tokenSha256'])
    if (raw.group !== undefined) {
      if (typeof raw.group !== 'string' || !Object.hasOwn(groups, raw.group)) throw new ConfigError(`nodes.${k}.group`, `no group ${JSON.stringify(raw.group)} under groups`)
      entry.group = raw.group
    }
    if (raw.arch !== undefined) entry.arch = parseArch(`nodes.${k}.arch`, raw.arch)
    if (raw.addresses !== undefined) entry.addresses = parseAddresses(`nodes.${k}.addresses`, raw.addresses)
    if (raw.tokenSha256 !== undefined) entry.tokenSha256 = parseTokenSha256(`nodes.${k}.tokenSha256`, raw.tokenSha256)
    nodes[k] = entry
  }
  checkDistinctCredentials(nodes)
  const images: NodesConfig['images'] = {}
  if (v.images !== undefined) {
    if (!isRecord(v.images)) throw new ConfigError('images', 'must be an object keyed by image name')
    for (const [k, s] of Object.entries(v.images)) {
      checkKey(`images.${k}`, k)
      if (!isRecord(s)) throw new ConfigError(`images.${k}`, 'must be an object {arch?}')
      for (const key of Object.keys(s)) if (key !== 'arch') throw new ConfigError(`images.${k}.${key}`, 'unknown key (expected arch)')
      images[k] = s.arch === undefined ? {} : { arch: parseArch(`images.${k}.arch`, s.arch) }
    }
  }
  return { schema: 1, defaults, architectures, groups, nodes, images }
}

/** The nodes file's entry for `node`, or `undefined` when it is not listed (whatever its name). */
export const configuredNode = (config: NodesConfig, node: string): NodeEntry | undefined => ownEntry(config.nodes, node)

/** The nodes file's overrides for image `name` (`images`), or `undefined`. */
export const imageOverrides = (config: NodesConfig, name: string): NodesConfig['images'][string] | undefined => ownEntry(config.images, name)

/** What a node should boot, before the image name is looked up in the store. */
export interface BootPlan {
  node: string
  /** The node's architecture, when the node or the config said. */
  arch?: Architecture
  style: BootStyle
  image: ImageRef
  partitions: Partitions
  policies: Policies
  /** Mirror base URLs in the order to try them (the most specific layer's list), when any layer has one. */
  mirrors?: string[]
  /** Which layer decided the image: `node`, `group`, `architecture` or `defaults`. */
  imageFrom: 'node' | 'group' | 'architecture' | 'defaults'
}

export type PlanResult =
  | { ok: true; plan: BootPlan }
  | { ok: false; status: 404 | 409; code: string; message: string }

/**
 * Resolves a node's boot plan. `reportedArch` is what the node said about
 * itself (`?arch=`); it must agree with the config's `arch` when both exist.
 */
export const resolvePlan = (config: NodesConfig, node: string, reportedArch?: Architecture): PlanResult => {
  const entry = configuredNode(config, node)
  if (!entry) return { ok: false, status: 404, code: 'ENONODE', message: `node ${JSON.stringify(node)} is not in the nodes file` }
  if (reportedArch && entry.arch && reportedArch !== entry.arch) {
    return {
      ok: false,
      status: 409,
      code: 'EARCH',
      message: `node ${node} says it is ${reportedArch} but the nodes file says ${entry.arch}; refusing to guess`,
    }
  }
  const arch = reportedArch ?? entry.arch
  const group = entry.group ? ownEntry(config.groups, entry.group) : undefined
  const byArch = arch ? ownEntry(config.architectures, arch) : undefined
  const layers: Array<[BootPlan['imageFrom'], Settings | undefined]> = [
    ['node', entry],
    ['group', group],
    ['architecture', byArch],
    ['defaults', config.defaults],
  ]
  const first = <K extends keyof Settings>(k: K): [Settings[K], BootPlan['imageFrom']] | undefined => {
    for (const [from, s] of layers) if (s?.[k] !== undefined) return [s[k], from]
    return undefined
  }
  const image = first('image')
  if (!image?.[0]) return { ok: false, status: 404, code: 'ENOIMAGE', message: `no image configured for node ${node} (node, group, architecture or defaults)` }
  // Partition specs and policies merge key by key, most specific last.
  const partitions: Partitions = {}
  const policies: Policies = {}
  for (const [, s] of [...layers].reverse()) {
    Object.assign(partitions, s?.partitions)
    Object.assign(policies, s?.policies)
  }
  return {
    ok: true,
    plan: {
      node,
      ...(arch ? { arch } : {}),
      style: first('style')?.[0] ?? 'disked',
      image: image[0],
      partitions,
      policies,
      ...(first('mirrors')?.[0] ? { mirrors: first('mirrors')?.[0] as string[] } : {}),
      imageFrom: image[1],
    },
  }
}
