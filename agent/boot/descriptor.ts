/**
 * The head node's boot descriptor (SPEC §3, docs/protocol.md):
 * `GET {server}/v1/nodes/{node}/boot` says what this node should boot.
 *
 * The JSON is `unknown` until {@link parseDescriptor} turns it into a
 * {@link BootDescriptor} or a {@link DescriptorError} naming the field. The
 * request has a deadline and is retried under the one retry policy of every
 * HTTP caller (core/retry.ts: transient network errors, 408, 425, 429, 5xx;
 * capped exponential backoff with full jitter, honouring `Retry-After`);
 * other 4xx answers are final.
 */
import { machineArch } from '../manifest/arch.js'
import { readFile } from 'node:fs/promises'
import { BootAgentError, ConfigError, HttpError, foreignCode, isErrno, messageOf } from '../core/errors.js'
import { firstDuplicateKey } from '../core/json-keys.js'
import type { Sleep } from '../core/clock.js'
import { DEFAULT_RETRY_POLICY, parseRetryAfter, retrying, tlsFailureCode } from '../core/retry.js'
import type { Logger } from '../core/log.js'
import { system } from '../core/system.js'
import { nodeHeaders } from '../protocol/node-header.js'
/** The node id before it is resolved (never sent as one: protocol/node-header.ts). */
export { UNKNOWN_NODE } from '../protocol/node-header.js'
import {
  BOOT_STYLES,
  type BootStyle,
  CACHE_FULL_POLICIES,
  type CacheFullPolicy,
  ONFAIL_ACTIONS,
  type OnFail,
  type PartitionSpec,
  parseNodeId,
  ROOT_MODES,
  type RootMode,
  parsePartitionSpec,
  MAX_BOOT_STREAMS,
  VERIFY_MODES,
  type VerifyMode,
} from './cmdline.js'

export interface BootDescriptor {
  schema: 1
  node: string
  style?: BootStyle
  image: {
    name: string
    /** Lower-case hex sha256: the image the node must boot. */
    sha256: string
    size: number
    /** Absolute URL of the manifest (resolved against the server when relative). */
    manifest: string
    /** The image's architecture (`uname -m` spelling), when the head says it. */
    arch?: string
    /**
     * The node's group's mirrors of the image bytes, absolute, in the order
     * to try them (rack cache first, head last); the manifest's own `urls`
     * come after them as the fallback.
     */
    mirrors?: string[]
  }
  partitions: { cache?: PartitionSpec | null; root?: PartitionSpec | null }
  policies: { cacheFull?: CacheFullPolicy; verify?: VerifyMode; onfail?: OnFail; rootMode?: RootMode; streams?: number }
}

/** A descriptor that does not follow the protocol; `field` is its JSON path. */
export class DescriptorError extends BootAgentError {
  readonly field: string
  constructor(field: string, problem: string, context: Record<string, unknown> = {}) {
    super('EDESCRIPTOR', `boot descriptor field ${field}: ${problem}`, { field, ...context })
    this.field = field
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

const optionalEnum = <T extends string>(o: Record<string, unknown>, key: string, field: string, allowed: readonly T[]): T | undefined => {
  const v = o[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new DescriptorError(field, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(v)})`)
  }
  return v as T
}

const optionalSpec = (o: Record<string, unknown>, key: string, field: string): PartitionSpec | null | undefined => {
  const v = o[key]
  if (v === undefined) return undefined
  if (v === null) return null
  if (typeof v !== 'string') throw new DescriptorError(field, 'must be a partition spec string')
  try {
    return parsePartitionSpec(field, v)
  } catch (e) {
    throw new DescriptorError(field, messageOf(e))
  }
}

/** Most mirrors a descriptor may name (a rack cache or two, an object store, the head). */
const MAX_MIRRORS = 16

/** `image.mirrors`: absolute http(s) URLs (relative ones resolved against `server`), or undefined when absent. */
const parseMirrors = (v: unknown, server: string): string[] | undefined => {
  if (v === undefined || v === null) return undefined
  if (!Array.isArray(v) || v.length > MAX_MIRRORS) throw new DescriptorError('image.mirrors', `must be a list of at most ${MAX_MIRRORS} URLs`)
  return v.map((u, i) => {
    let url: URL
    try {
      if (typeof u !== 'string' || u.length === 0) throw new TypeError('not a string')
      url = new URL(u, server + '/')
    } catch {
      throw new DescriptorError(`image.mirrors[${i}]`, `not a URL: ${JSON.stringify(u)}`)
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new DescriptorError(`image.mirrors[${i}]`, `must be http(s) (got ${url.protocol})`)
    return url.toString()
  })
}

/** Turns the descriptor JSON into a typed value, resolving the manifest URL against `server`. */
export const parseDescriptor = (v: unknown, server: string): BootDescriptor => {
  if (!isObject(v)) throw new DescriptorError('$', 'must be a JSON object')
  if (v.schema !== 1) throw new DescriptorError('schema', `must be 1 (got ${JSON.stringify(v.schema)})`)
  if (typeof v.node !== 'string') throw new DescriptorError('node', 'must be a string')
  const style = optionalEnum(v, 'style', 'style', BOOT_STYLES)
  const img = v.image
  if (!isObject(img)) throw new DescriptorError('image', 'must be an object')
  if (typeof img.name !== 'string' || img.name.length === 0) throw new DescriptorError('image.name', 'must be a non-empty string')
  if (typeof img.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(img.sha256)) {
    throw new DescriptorError('image.sha256', 'must be 64 lower-case hex digits')
  }
  if (typeof img.size !== 'number' || !Number.isSafeInteger(img.size) || img.size <= 0) {
    throw new DescriptorError('image.size', 'must be a positive integer (bytes)')
  }
  if (typeof img.manifest !== 'string' || img.manifest.length === 0) throw new DescriptorError('image.manifest', 'must be a URL')
  const arch = img.arch === undefined || img.arch === null ? undefined : img.arch
  if (arch !== undefined && (typeof arch !== 'string' || !/^[a-z0-9_]{1,32}$/.test(arch))) {
    throw new DescriptorError('image.arch', `must be an architecture name like x86_64 (got ${JSON.stringify(arch)})`)
  }
  if (typeof arch === 'string' && arch !== nodeArch()) {
    // protocol.md: a node of another architecture must refuse the image too (never boot it).
    throw new DescriptorError('image.arch', `image ${img.name} is for ${arch}, this node is ${nodeArch()}`)
  }
  let manifest: URL
  try {
    manifest = new URL(img.manifest, server + '/')
  } catch {
    throw new DescriptorError('image.manifest', `not a URL: ${JSON.stringify(img.manifest)}`)
  }
  if (manifest.protocol !== 'http:' && manifest.protocol !== 'https:') {
    throw new DescriptorError('image.manifest', `must be http(s) (got ${manifest.protocol})`)
  }
  const mirrors = parseMirrors(img.mirrors, server)
  const parts = v.partitions === undefined ? {} : v.partitions
  if (!isObject(parts)) throw new DescriptorError('partitions', 'must be an object')
  const pol = v.policies === undefined ? {} : v.policies
  if (!isObject(pol)) throw new DescriptorError('policies', 'must be an object')
  const partitions: BootDescriptor['partitions'] = {}
  const cache = optionalSpec(parts, 'cache', 'partitions.cache')
  if (cache !== undefined) partitions.cache = cache
  const root = optionalSpec(parts, 'root', 'partitions.root')
  if (root !== undefined) partitions.root = root
  const policies: BootDescriptor['policies'] = {}
  const cacheFull = optionalEnum(pol, 'cacheFull', 'policies.cacheFull', CACHE_FULL_POLICIES)
  if (cacheFull) policies.cacheFull = cacheFull
  const verify = optionalEnum(pol, 'verify', 'policies.verify', VERIFY_MODES)
  if (verify) policies.verify = verify
  const onfail = optionalEnum(pol, 'onfail', 'policies.onfail', ONFAIL_ACTIONS)
  if (onfail) policies.onfail = onfail
  const rootMode = optionalEnum(pol, 'rootMode', 'policies.rootMode', ROOT_MODES)
  if (rootMode) policies.rootMode = rootMode
  if (pol.streams !== undefined && pol.streams !== null) {
    if (typeof pol.streams !== 'number' || !Number.isInteger(pol.streams) || pol.streams < 1 || pol.streams > MAX_BOOT_STREAMS) {
      throw new DescriptorError('policies.streams', `must be a whole number from 1 to ${MAX_BOOT_STREAMS} (got ${JSON.stringify(pol.streams)})`)
    }
    policies.streams = pol.streams
  }
  return {
    schema: 1,
    node: v.node,
    ...(style ? { style } : {}),
    image: { name: img.name, sha256: img.sha256, size: img.size, manifest: manifest.toString(), ...(arch ? { arch } : {}), ...(mirrors ? { mirrors } : {}) },
    partitions,
    policies,
  }
}

export interface FetchDescriptorOptions {
  /** Deadline of each attempt. */
  timeoutMs: number
  /** Attempts in all (transient failures only are retried). Default 5. */
  attempts?: number
  signal?: AbortSignal
  log?: Logger
  /** The jitter's randomness (seed it per node). Default Math.random. */
  random?: () => number
  /** Injectable for tests: waits `ms` (default the real sleep, abortable). */
  sleep?: Sleep
  /** This node's bearer token for the head (agent/core/head-token.ts); never logged. */
  token?: string
}

/** Attempts in all by default: a boot should not wait minutes for its head node before its fallbacks. */
const DEFAULT_ATTEMPTS = 5
/** Descriptors are small; a bigger answer is not a descriptor. */
const MAX_DESCRIPTOR_BYTES = 1024 * 1024

/** The descriptor URL for a node. */
/** This node's architecture in `uname -m` spelling, as the protocol names it. */
export const nodeArch = (): string => machineArch()

/** The descriptor URL; `?arch=` lets the head refuse an image of another architecture (protocol.md). */
export const descriptorUrl = (server: string, node: string): string =>
  `${server}/v1/nodes/${encodeURIComponent(node)}/boot?arch=${encodeURIComponent(nodeArch())}`

/** Fetches and validates the node's boot descriptor. */
export const fetchDescriptor = async (server: string, node: string, opts: FetchDescriptorOptions): Promise<BootDescriptor> => {
  // Loaded here, not at the top: node-fetch (with https/tls, zlib and web streams)
  // is the biggest part of the boot command's start-up, and only this request and
  // the downloads need it.
  const [{ default: fetch, FetchError }, { agentFor, failedRequestMessage }] = await Promise.all([import('node-fetch'), import('../transport/trust.js')])
  const url = descriptorUrl(server, node)

  /** A failed request as an error the retry policy reads by its codes. */
  const requestError = (e: unknown): unknown => {
    if (e instanceof HttpError || opts.signal?.aborted) return e
    // A certificate nobody trusted does not get better with retries (SPEC §6): a TLS code is final.
    const tls = tlsFailureCode(e)
    if (tls) return new BootAgentError(foreignCode(tls), `cannot fetch ${failedRequestMessage(url, e)}`, { url }, { cause: e })
    // Our own deadline: as the downloader's, a request that got no answer in time (EIDLE, retried).
    if (e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError')) {
      const idle = new BootAgentError('EIDLE', `no answer from ${url} within ${opts.timeoutMs} ms`, { url }, { cause: e })
      return new BootAgentError('ENETWORK', `cannot fetch ${failedRequestMessage(url, e)}`, { url }, { cause: idle })
    }
    // The network error's own code (ECONNREFUSED, ECONNRESET, …) decides, through the cause.
    if (e instanceof FetchError) return new BootAgentError('ENETWORK', `cannot fetch ${failedRequestMessage(url, e)}`, { url }, { cause: e })
    return e
  }

  const once = async (): Promise<BootDescriptor> => {
    let body: Buffer
    try {
      const signals = [AbortSignal.timeout(opts.timeoutMs), ...(opts.signal ? [opts.signal] : [])]
      const headers = { accept: 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...nodeHeaders(node) }
      const res = await fetch(url, { signal: AbortSignal.any(signals), headers, agent: agentFor })
      if (!res.ok) {
        const ra = parseRetryAfter(res.headers.get('retry-after'))
        await res.arrayBuffer().catch(() => undefined)
        throw new HttpError({ status: res.status, url, ...(ra !== undefined ? { retryAfterMs: ra } : {}) })
      }
      body = Buffer.from(await res.arrayBuffer())
    } catch (e) {
      throw requestError(e)
    }
    if (body.length > MAX_DESCRIPTOR_BYTES) throw new DescriptorError('$', `answer is ${body.length} bytes, more than ${MAX_DESCRIPTOR_BYTES}`, { url })
    let json: unknown
    const text = body.toString('utf8')
    try {
      json = JSON.parse(text)
    } catch {
      throw new DescriptorError('$', 'not JSON', { url })
    }
    const dup = firstDuplicateKey(text)
    if (dup) throw new DescriptorError(dup.path, `has the key ${JSON.stringify(dup.key)} twice: JSON readers disagree on which one counts; fix the head's answer for this node`, { url })
    const d = parseDescriptor(json, server)
    if (d.node !== node) throw new DescriptorError('node', `is ${JSON.stringify(d.node)}, asked for ${JSON.stringify(node)}`, { url })
    return d
  }

  try {
    return await retrying(once, {
      policy: { ...DEFAULT_RETRY_POLICY, maxAttempts: opts.attempts ?? DEFAULT_ATTEMPTS },
      ...(opts.random ? { random: opts.random } : {}),
      ...(opts.sleep ? { sleep: opts.sleep } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      onRetry: (r) => opts.log?.warn({ url, attempt: r.attempt, waitMs: r.waitMs, err: messageOf(r.error) }, 'boot descriptor fetch failed; retrying'),
    })
  } catch (e) {
    if (opts.signal?.aborted) throw new BootAgentError('EABORT', `fetching ${url} aborted`, { url }, { cause: e })
    throw e
  }
}

/** An all-zero or all-F UUID is what firmware writes when it has none. */
const isPlaceholderUuid = (u: string): boolean => /^[0-]+$/.test(u) || /^[fF-]+$/.test(u)

export interface NodeIdSources {
  /** From `rd.bootagent.node`, already validated. */
  fromCmdline?: string
  /** Reads the DMI product UUID (default /sys/class/dmi/id/product_uuid). */
  readDmiUuid?: () => Promise<string | undefined>
  /** MAC addresses of the physical interfaces (default systeminformation). */
  listMacs?: () => Promise<string[]>
}

const defaultReadDmiUuid = async (): Promise<string | undefined> => {
  try {
    return (await readFile(system.dmiProductUuid, 'utf8')).trim()
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'EACCES', 'EPERM', 'ENODEV', 'EIO')) return undefined
    throw e
  }
}

const defaultListMacs = async (): Promise<string[]> => {
  // Loaded on demand: systeminformation is large and most nodes have a DMI UUID.
  // `.default`: it is CommonJS, and in the code-split bundle its chunk has only
  // a default export (module.exports), as Node gives an ESM importer.
  const si = (await import('systeminformation')).default
  const ifaces = await si.networkInterfaces()
  const list = Array.isArray(ifaces) ? ifaces : [ifaces]
  return list
    .filter((i) => !i.internal && !i.virtual)
    .sort((a, b) => a.iface.localeCompare(b.iface))
    .map((i) => i.mac)
}

export type NodeIdSource = 'cmdline' | 'dmi' | 'mac'

/** This node's id: `rd.bootagent.node`, else the DMI system UUID, else the first MAC (SPEC §3). */
export const resolveNodeId = async (src: NodeIdSources = {}): Promise<{ node: string; source: NodeIdSource }> => {
  if (src.fromCmdline) return { node: src.fromCmdline, source: 'cmdline' }
  const uuid = (await (src.readDmiUuid ?? defaultReadDmiUuid)())?.trim().toLowerCase()
  if (uuid && /^[0-9a-f-]{32,36}$/.test(uuid) && !isPlaceholderUuid(uuid)) return { node: uuid, source: 'dmi' }
  const macs = (await (src.listMacs ?? defaultListMacs)()).map((m) => m.toLowerCase())
  const mac = macs.find((m) => /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m) && m !== '00:00:00:00:00:00')
  if (mac) return { node: parseNodeId('node id', mac), source: 'mac' }
  throw new ConfigError('rd.bootagent.node', 'not given, and this machine has no DMI system UUID and no MAC address to use instead')
}
