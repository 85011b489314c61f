/**
 * The `data` of each event kind (SPEC §8, docs/protocol.md "Events"): one
 * type per kind, and next to it the table of its fields that the parser
 * checks and docs/protocol.md is tested against (test/protocol/docs.test.ts).
 * TypeScript holds each table to its type: a field added to one and not the
 * other does not compile.
 *
 * Every field is optional on the wire except a boot event's `record` (the
 * parser fills it in, see parse.ts); what the node sends is listed, so a
 * head node written elsewhere knows what to expect. Types are aliases, not
 * interfaces, so a payload is also a plain `Record<string, unknown>`.
 *
 * A new event kind: add its type and table here, its name to EVENT_KINDS
 * (event.ts), a section to docs/protocol.md, and a case to the head's
 * node-state.ts if the head should fold it into its node view.
 */
import {
  arrayOf, boolean, count, type Field, hexDigest, integer, mapOf, nullable, number, object, oneOf, type Shape, string, time,
} from './fields.js'

/** The image an event is about: name and digest, both optional. */
export type ImageRef = {
  name?: string
  /** Lower-case hex sha256 of the whole image: its identity. */
  sha256?: string
}

/** A boot style fallback: what the plan had to give up, and why (boot/plan.ts `Fallback`). */
export type FallbackEntry = { kind?: string; reason?: string }

const fallbackEntry = object<FallbackEntry>({ kind: string(64), reason: string() })

/** `fallback`: one per fallback of a boot, sent with the boot. */
export type FallbackData = {
  kind?: string
  reason?: string
  requestedStyle?: string | null
  style?: string | null
}

const FALLBACK: Shape<FallbackData> = {
  kind: string(64),
  reason: string(),
  requestedStyle: nullable(string(32)),
  style: nullable(string(32)),
}

/** An error as the boot stage reports it: its stable code and message. */
export type ErrorData = { code?: string; message?: string }

const errorData = object<ErrorData>({ code: string(64), message: string() })

/** The boot record (SPEC §7, boot/handoff.ts `BootRecord`) as carried in a boot event. */
export type BootRecordData = {
  schema?: number
  node?: string
  server?: string
  style?: string | null
  requestedStyle?: string | null
  fallbacks?: FallbackEntry[]
  image?: { name?: string; sha256?: string; size?: number } | null
  cache?: { spec?: string | null; device?: string; mountpoint?: string; hit?: boolean; verifiedBy?: string; objectPath?: string; inRam?: boolean }
  /** `mode` and the overlay's fields: issue #19 (agent/boot/handoff.ts BootRecord). */
  root?: { spec?: string | null; device?: string; sysroot?: string; init?: string; mode?: string; mountpoint?: string; lower?: string; upper?: string; trash?: string; trashed?: number }
  bytesFetched?: number
  timings?: Record<string, number>
  result?: 'ok' | 'failed'
  action?: string
  error?: ErrorData
  spoolDir?: string
  time?: string
}

/** The boot record's fields (a flat boot event's `data` is checked against these too, see parse.ts). */
export const BOOT_RECORD: Shape<BootRecordData> = {
  schema: count,
  node: string(),
  server: string(),
  style: nullable(string(32)),
  requestedStyle: nullable(string(32)),
  fallbacks: arrayOf(fallbackEntry),
  image: nullable(object<NonNullable<BootRecordData['image']>>({ name: string(), sha256: string(), size: count })),
  cache: object<NonNullable<BootRecordData['cache']>>({
    spec: nullable(string()), device: string(), mountpoint: string(), hit: boolean, verifiedBy: string(32), objectPath: string(), inRam: boolean,
  }),
  root: object<NonNullable<BootRecordData['root']>>({
    spec: nullable(string()), device: string(), sysroot: string(), init: string(), mode: string(32), mountpoint: string(), lower: string(), upper: string(), trash: string(), trashed: count,
  }),
  bytesFetched: count,
  timings: mapOf(number),
  result: oneOf('ok', 'failed'),
  action: string(32),
  error: errorData,
  spoolDir: string(),
  time: string(64),
}

/**
 * `boot` and `boot-failed`: the boot record, and for a failed boot the error
 * and what the stage did about it (also inside the record).
 */
export type BootData = {
  record: BootRecordData
  error?: ErrorData
  action?: string
}

const BOOT: Shape<BootData> = {
  record: object(BOOT_RECORD),
  error: errorData,
  action: string(32),
}

/** A chunk the daemon's self-check found bad in a cached object. */
export type BadChunkData = { index?: number; offset?: number; size?: number; expected?: string }

const badChunk = object<BadChunkData>({ index: count, offset: count, size: count, expected: hexDigest })

/** What the daemon's self-check of a cached object reports (in `integrity` and `cache` events). */
export type SelfCheckData = {
  source?: string
  what?: string
  objectPath?: string
  chunksChecked?: number
  badChunks?: BadChunkData[]
  corruptChunks?: number[]
  durationMs?: number
  reason?: string
  action?: string
}

const SELF_CHECK: Shape<SelfCheckData> = {
  source: string(32),
  what: string(),
  objectPath: string(),
  chunksChecked: count,
  badChunks: arrayOf(badChunk),
  corruptChunks: arrayOf(count),
  durationMs: count,
  reason: string(),
  action: string(32),
}

/**
 * `integrity`: bytes that did not hash to what they should. From a download
 * (`url` or `chunk` set) it is about what a server sent; from the daemon's
 * self-check (`source: "self-check"`) or a cached object repaired at boot
 * it is about the node's own disk.
 */
export type IntegrityData = SelfCheckData & {
  algorithm?: string
  expected?: string
  found?: string
  url?: string
  chunk?: number
  object?: string
  chunksRepaired?: number
  bytesFetched?: number
  repair?: string
}

const INTEGRITY: Shape<IntegrityData> = {
  ...SELF_CHECK,
  algorithm: string(32),
  expected: hexDigest,
  found: hexDigest,
  url: string(),
  chunk: count,
  object: string(),
  chunksRepaired: count,
  bytesFetched: count,
  repair: string(),
}

/** `cache`: the cache cleared at boot (`action: "clear"`), or a self-check that verified or could not run. */
export type CacheData = SelfCheckData & {
  cleared?: boolean
  error?: string
}

const CACHE: Shape<CacheData> = {
  ...SELF_CHECK,
  cleared: boolean,
  error: string(),
}

/** An inclusive range of kernel log sequence numbers, `[first, last]`. */
const seqRange: Field = {
  check: (v, at) => (Array.isArray(v) && v.length === 2 ? arrayOf(count).check(v, at) : { field: at, problem: 'must be a pair [first, last]' }),
}

/** Where in the kernel log an event's records are: boot id and sequence numbers (inclusive ranges). */
export type KmsgData = { bootId?: string; firstSeq?: number; lastSeq?: number; seqs?: Array<[number, number]> }

const kmsgData = object<KmsgData>({ bootId: string(64), firstSeq: count, lastSeq: count, seqs: arrayOf(seqRange) })

/** A cache object named in a kernel error: its digest and path. */
export type ObjectData = { sha256?: string; path?: string }

const objectData = object<ObjectData>({ sha256: string(), path: string() })

/**
 * `squashfs-error` and `io-error`: kernel log records of one class on one
 * device, coalesced (daemon/classify.ts, events/coalesce.ts).
 */
export type KernelErrorData = {
  class?: string
  device?: string
  message?: string
  source?: string
  rule?: string
  /** Rule `unattributed`: why no image is named (the record predates the device's current binding). */
  unattributed?: string
  backingFile?: string
  object?: ObjectData
  role?: string
  candidates?: Array<{ device?: string; object?: string }>
  compressor?: string
  errno?: number
  subsystem?: string
  count?: number
  firstTime?: string
  lastTime?: string
  kmsg?: KmsgData
  blocks?: Array<{ offset?: number; size?: number }>
  blocksNotListed?: number
}

const KERNEL_ERROR: Shape<KernelErrorData> = {
  class: string(64),
  device: string(),
  message: string(),
  source: string(32),
  rule: string(32),
  unattributed: string(),
  backingFile: string(),
  object: objectData,
  role: string(32),
  candidates: arrayOf(object<{ device?: string; object?: string }>({ device: string(), object: string() })),
  compressor: string(32),
  errno: integer,
  subsystem: string(64),
  count,
  firstTime: time,
  lastTime: time,
  kmsg: kmsgData,
  blocks: arrayOf(object<{ offset?: number; size?: number }>({ offset: count, size: count })),
  blocksNotListed: count,
}

/** A cache directory's use (daemon/cache-usage.ts), as the heartbeat reports it. */
export type CacheUsageData = { dir?: string; objects?: number; bytes?: number; corruptObjects?: number; fsBytes?: number; fsFreeBytes?: number }

/** `status`: the daemon's heartbeat (daemon/heartbeat.ts); the event's `image` is the running image. */
export type StatusData = {
  hostname?: string
  arch?: string
  kernel?: string
  distro?: string
  uptimeS?: number
  cpus?: { brand?: string; cores?: number; physicalCores?: number }
  memory?: { totalBytes?: number; availableBytes?: number }
  disks?: Array<{ fs?: string; type?: string; mount?: string; sizeBytes?: number; usedBytes?: number }>
  cache?: CacheUsageData[]
  running?: ImageRef | null
  style?: string | null
  requestedStyle?: string | null
  fallbacks?: FallbackEntry[]
  bootResult?: string | null
  daemon?: Record<string, unknown>
  probeErrors?: string[]
}

const STATUS: Shape<StatusData> = {
  hostname: string(),
  arch: string(32),
  kernel: string(),
  distro: string(),
  uptimeS: number,
  // Hardware figures come from systeminformation: numbers, not held to integers (a refused heartbeat would be lost).
  cpus: object<NonNullable<StatusData['cpus']>>({ brand: string(), cores: number, physicalCores: number }),
  memory: object<NonNullable<StatusData['memory']>>({ totalBytes: number, availableBytes: number }),
  disks: arrayOf(object<NonNullable<StatusData['disks']>[number]>({ fs: string(), type: string(), mount: string(), sizeBytes: number, usedBytes: number })),
  cache: arrayOf(object<CacheUsageData>({ dir: string(), objects: count, bytes: count, corruptObjects: count, fsBytes: count, fsFreeBytes: count })),
  running: nullable(object<ImageRef>({ name: string(), sha256: string() })),
  style: nullable(string(32)),
  requestedStyle: nullable(string(32)),
  fallbacks: arrayOf(fallbackEntry),
  bootResult: nullable(string(32)),
  daemon: object(),
  probeErrors: arrayOf(string()),
}

/** `lost`: events a spool had to drop, or kernel log records overwritten before they were read. */
export type LostData = {
  source?: string
  count?: number
  spool?: string
  totalLost?: number
  fromSeq?: number
  toSeq?: number
  reason?: string
  kmsg?: KmsgData
}

const LOST: Shape<LostData> = {
  source: string(32),
  count,
  spool: string(),
  totalLost: count,
  fromSeq: count,
  toSeq: count,
  reason: string(),
  kmsg: kmsgData,
}

/** The payload type of each event kind. */
export type EventPayloads = {
  boot: BootData
  'boot-failed': BootData
  fallback: FallbackData
  integrity: IntegrityData
  'squashfs-error': KernelErrorData
  'io-error': KernelErrorData
  cache: CacheData
  status: StatusData
  lost: LostData
}

/** The field table of each event kind's payload (checked by parse.ts, listed by docs/protocol.md). */
export const PAYLOAD_FIELDS: { readonly [K in keyof EventPayloads]: Shape<EventPayloads[K]> } = {
  boot: BOOT,
  'boot-failed': BOOT,
  fallback: FALLBACK,
  integrity: INTEGRITY,
  'squashfs-error': KERNEL_ERROR,
  'io-error': KERNEL_ERROR,
  cache: CACHE,
  status: STATUS,
  lost: LOST,
}

