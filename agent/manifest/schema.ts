/**
 * Strict parsing of a manifest from the outside world (SPEC §4): `unknown` (or
 * JSON text) in, a validated {@link Manifest} out, or a ManifestError whose
 * `field` is the JSON path of what was wrong (`$.chunks[3][1]`). This is the
 * one gate: every Manifest the agent acts on came through it (fetchManifest,
 * buildManifest, the `manifest` command), so the fetch and the boot stage
 * rely on its typed result and check nothing again.
 *
 * Decisions (docs/manifest.md, "Validation"):
 *   - unknown keys are refused at every level: a newer format bumps `schema`;
 *   - hex digests must be lower case (upper case is refused, not normalised,
 *     so a manifest has exactly one canonical form and one signature);
 *   - chunks must tile [0, size) exactly, in order, each within the chunking
 *     bounds (only the last may be shorter than minSize);
 *   - URLs must be http(s), without credentials; relative ones are resolved
 *     against `baseUrl` (the manifest's own URL) after the signature check,
 *     since the signature covers the URLs as written;
 *   - `xxh64Segments` (optional: older manifests lack it) must hold exactly
 *     one 16-digit lower-case hex xxh64 per 64 MiB segment of `size`;
 *   - `fsverityDigest` (optional: issue #19) is 64 lower-case hex digits.
 */
import { ARCH_RE } from './arch.js'
import { ConfigError, IntegrityError, ManifestError, SignatureError, SizeError } from '../core/errors.js'
import { firstDuplicateKey } from '../core/json-keys.js'
import { chunkingProblem } from './cdc.js'
import { type KeyInput, verifyManifestSignature } from './sign.js'
import type { Chunk, ChunkingParams, Manifest, ManifestSignature } from './types.js'
import { XXH64_SEGMENT_BYTES, segmentCount } from '../hash/xxh64-format.js'

/** The schema version this agent reads and writes. */
export const MANIFEST_SCHEMA = 1

/** At most this many chunks (4 Mi: a 256 GiB image at the 64 KiB default). */
export const MAX_CHUNKS = 4 * 1024 * 1024
/** At most this many URLs. */
export const MAX_URLS = 64
/** Longest URL accepted, in characters. */
export const MAX_URL_CHARS = 4096
/** Longest image name, in characters. */
export const MAX_NAME_CHARS = 128
/** Largest manifest text accepted by parseManifest, in characters (bounds JSON.parse). */
export const MAX_MANIFEST_CHARS = 512 * 1024 * 1024

const HEX64 = /^[0-9a-f]{64}$/
const HEX64_ANY_CASE = /^[0-9a-fA-F]{64}$/
const HEX16 = /^[0-9a-f]{16}$/
const HEX16_ANY_CASE = /^[0-9a-fA-F]{16}$/
/** Image names: they appear in head-node URL paths and file names. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+@:-]*$/
const FORMAT_RE = /^[a-z0-9][a-z0-9._-]{0,31}$/
const ISO_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/

export interface ParseManifestOptions {
  /**
   * The manifest's own URL; relative `urls` are resolved against it. Without
   * it, relative URLs are kept as written (a caller that downloads must pass it).
   */
  baseUrl?: string
  /**
   * Trusted ed25519 public key (PEM or KeyObject). When given, an unsigned,
   * wrongly signed, other-key-signed or altered manifest is refused with
   * SignatureError (ESIGNATURE).
   */
  publicKey?: KeyInput
  /** Refuse an unsigned manifest even without a key (then the signature's shape is checked, not its validity). */
  requireSignature?: boolean
  /**
   * The image the manifest must describe, as pinned by whoever pointed at
   * it (`by`: the boot descriptor): another sha256 is refused with
   * IntegrityError (EINTEGRITY), another size with SizeError (EBADSIZE).
   * Checked last, after the signature.
   */
  pinned?: { sha256: string; size: number; by: string }
}

type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)

const keyPath = (parent: string, key: string): string => (/^[A-Za-z_$][\w$]*$/.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(key)}]`)

const expectObject = (v: unknown, path: string, keys: readonly string[], required: readonly string[]): Obj => {
  if (!isObj(v)) throw new ManifestError(path, `must be an object, got ${typeName(v)}`)
  for (const k of Object.keys(v)) {
    if (!keys.includes(k)) throw new ManifestError(keyPath(path, k), `unknown field (allowed here: ${keys.join(', ')})`)
  }
  for (const k of required) {
    if (!(k in v)) throw new ManifestError(keyPath(path, k), 'is missing')
  }
  return v
}

const expectString = (v: unknown, path: string): string => {
  if (typeof v !== 'string') throw new ManifestError(path, `must be a string, got ${typeName(v)}`)
  return v
}

/** A byte count: a non-negative safe integer. */
const expectSize = (v: unknown, path: string, min: number): number => {
  if (typeof v !== 'number') throw new ManifestError(path, `must be a number, got ${typeName(v)}`)
  if (!Number.isFinite(v) || !Number.isInteger(v)) throw new ManifestError(path, `must be an integer, got ${v}`)
  if (v > Number.MAX_SAFE_INTEGER) throw new ManifestError(path, `is absurdly large (${v} > 2^53 - 1)`)
  if (v < min) throw new ManifestError(path, `must be at least ${min}, got ${v}`)
  return v
}

const expectHex64 = (v: unknown, path: string): string => {
  const s = expectString(v, path)
  if (HEX64.test(s)) return s
  if (HEX64_ANY_CASE.test(s)) throw new ManifestError(path, 'hex digest must be lower case (one manifest, one canonical form)')
  throw new ManifestError(path, `must be 64 hex digits (a sha256), got ${s.length > 80 ? `${s.length} characters` : JSON.stringify(s)}`)
}

const parseName = (v: unknown, path: string): string => {
  const s = expectString(v, path)
  if (s.length === 0) throw new ManifestError(path, 'must not be empty')
  if (s.length > MAX_NAME_CHARS) throw new ManifestError(path, `is longer than ${MAX_NAME_CHARS} characters`)
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(s)) throw new ManifestError(path, 'must not contain control characters')
  if (s.includes('/') || s.includes('\\')) throw new ManifestError(path, `must not contain a path separator: ${JSON.stringify(s)}`)
  if (s.includes('..')) throw new ManifestError(path, `must not contain "..": ${JSON.stringify(s)}`)
  if (!NAME_RE.test(s)) throw new ManifestError(path, `must be letters, digits and . _ + @ : - (starting with a letter or digit), got ${JSON.stringify(s)}`)
  return s
}

const parseCreated = (v: unknown, path: string): string => {
  const s = expectString(v, path)
  if (!ISO_TIME_RE.test(s) || !Number.isFinite(Date.parse(s))) {
    throw new ManifestError(path, `must be an ISO-8601 date-time like 2026-01-31T12:00:00Z, got ${JSON.stringify(s.slice(0, 64))}`)
  }
  return s
}

const parseChunking = (v: unknown, path: string): ChunkingParams => {
  const keys = ['algorithm', 'minSize', 'avgSize', 'maxSize'] as const
  const o = expectObject(v, path, keys, keys)
  const p: ChunkingParams = {
    algorithm: expectString(o.algorithm, `${path}.algorithm`),
    minSize: expectSize(o.minSize, `${path}.minSize`, 1),
    avgSize: expectSize(o.avgSize, `${path}.avgSize`, 1),
    maxSize: expectSize(o.maxSize, `${path}.maxSize`, 1),
  }
  const bad = chunkingProblem(p)
  if (bad) throw new ManifestError(`${path}.${bad.field}`, bad.problem)
  return p
}

/** Checks one URL as written; returns it unchanged (resolution happens later). */
const checkUrl = (v: unknown, path: string, baseUrl: URL | undefined): URL => {
  const s = expectString(v, path)
  if (s.length === 0) throw new ManifestError(path, 'must not be empty')
  if (s.length > MAX_URL_CHARS) throw new ManifestError(path, `is longer than ${MAX_URL_CHARS} characters`)
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f]/.test(s)) throw new ManifestError(path, 'must not contain spaces or control characters')
  let u: URL
  try {
    // Without a base, a relative URL is checked against a placeholder http base.
    u = new URL(s, baseUrl ?? 'http://relative.invalid/')
  } catch {
    throw new ManifestError(path, `is not a valid URL: ${JSON.stringify(s.slice(0, 200))}`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ManifestError(path, `must be http or https, got ${u.protocol.replace(/:$/, '')}`)
  }
  if (u.username !== '' || u.password !== '') {
    throw new ManifestError(path, 'must not carry credentials (user:password@): every node would read them')
  }
  return u
}

const parseUrls = (v: unknown, path: string, baseUrl: URL | undefined): { raw: string[]; resolved: string[] } => {
  if (!Array.isArray(v)) throw new ManifestError(path, `must be an array of URLs, got ${typeName(v)}`)
  if (v.length === 0) throw new ManifestError(path, 'must list at least one URL')
  if (v.length > MAX_URLS) throw new ManifestError(path, `lists ${v.length} URLs, more than ${MAX_URLS}`)
  const raw: string[] = []
  const resolved: string[] = []
  const seen = new Map<string, number>()
  v.forEach((item, i) => {
    const p = `${path}[${i}]`
    const u = checkUrl(item, p, baseUrl)
    const isAbsolute = /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(item as string)
    const out = baseUrl || isAbsolute ? u.href : (item as string)
    const prev = seen.get(out)
    if (prev !== undefined) throw new ManifestError(p, `duplicates ${path}[${prev}] (${out})`)
    seen.set(out, i)
    raw.push(item as string)
    resolved.push(out)
  })
  return { raw, resolved }
}

const parseChunks = (v: unknown, path: string, size: number, ch: ChunkingParams): Chunk[] => {
  if (!Array.isArray(v)) throw new ManifestError(path, `must be an array of [offset, size, sha256], got ${typeName(v)}`)
  if (v.length === 0) throw new ManifestError(path, 'must list at least one chunk')
  // Every chunk but the last is at least minSize, so more than this cannot tile `size`.
  const most = Math.min(MAX_CHUNKS, Math.floor(size / ch.minSize) + 1)
  if (v.length > most) {
    throw new ManifestError(path, `has ${v.length} chunks: too many for ${size} bytes with minSize ${ch.minSize} (at most ${most})`)
  }
  const chunks: Chunk[] = new Array<Chunk>(v.length)
  let expected = 0
  const last = v.length - 1
  for (let i = 0; i < v.length; i++) {
    const p = `${path}[${i}]`
    const c: unknown = v[i]
    if (!Array.isArray(c) || c.length !== 3) {
      throw new ManifestError(p, `must be [offset, size, sha256], got ${Array.isArray(c) ? `an array of ${c.length}` : typeName(c)}`)
    }
    const offset = expectSize(c[0], `${p}[0]`, 0)
    if (offset < expected) throw new ManifestError(`${p}[0]`, `chunk ${i} starts at ${offset}, overlapping the previous chunk (which ends at ${expected})`)
    if (offset > expected) throw new ManifestError(`${p}[0]`, `chunk ${i} starts at ${offset}, leaving a gap after ${expected} (chunks must be contiguous and in order)`)
    const csize = expectSize(c[1], `${p}[1]`, 1)
    if (csize > ch.maxSize) throw new ManifestError(`${p}[1]`, `chunk ${i} is ${csize} bytes, above chunking.maxSize ${ch.maxSize}`)
    if (i < last && csize < ch.minSize) throw new ManifestError(`${p}[1]`, `chunk ${i} is ${csize} bytes, below chunking.minSize ${ch.minSize} (only the last may be shorter)`)
    if (offset + csize > size) throw new ManifestError(`${p}[1]`, `chunk ${i} ends at ${offset + csize}, past the image size ${size}`)
    chunks[i] = { index: i, offset, size: csize, sha256: expectHex64(c[2], `${p}[2]`) }
    expected = offset + csize
  }
  if (expected !== size) throw new ManifestError(path, `chunks cover ${expected} bytes but size is ${size}`)
  return chunks
}

/** One xxh64 per 64 MiB segment of the image, 16 lower-case hex digits each. */
const parseSegments = (v: unknown, path: string, size: number): string[] => {
  const want = segmentCount(size)
  const per = `one per ${XXH64_SEGMENT_BYTES / (1024 * 1024)} MiB segment of ${size} bytes`
  if (!Array.isArray(v)) throw new ManifestError(path, `must be an array of ${want} xxh64 digest(s) (${per}), got ${typeName(v)}`)
  if (v.length !== want) throw new ManifestError(path, `has ${v.length} digest(s), expected ${want} (${per})`)
  return v.map((d, i) => {
    const s = expectString(d, `${path}[${i}]`)
    if (HEX16.test(s)) return s
    if (HEX16_ANY_CASE.test(s)) throw new ManifestError(`${path}[${i}]`, 'hex digest must be lower case (one manifest, one canonical form)')
    throw new ManifestError(`${path}[${i}]`, `must be 16 hex digits (an xxh64), got ${s.length > 80 ? `${s.length} characters` : JSON.stringify(s)}`)
  })
}

const parseSignature = (v: unknown, path: string): ManifestSignature => {
  const keys = ['algorithm', 'keyId', 'value'] as const
  const o = expectObject(v, path, keys, keys)
  if (o.algorithm !== 'ed25519') throw new ManifestError(`${path}.algorithm`, `must be "ed25519", got ${JSON.stringify(o.algorithm)}`)
  const keyId = expectHex64(o.keyId, `${path}.keyId`)
  const value = expectString(o.value, `${path}.value`)
  if (!BASE64_RE.test(value) || value.length % 4 !== 0 || Buffer.from(value, 'base64').length !== 64) {
    throw new ManifestError(`${path}.value`, 'must be a base64 ed25519 signature (64 bytes)')
  }
  return { algorithm: 'ed25519', keyId, value }
}

/** Control characters other than tab/newline/CR, and U+FFFD (what invalid UTF-8 decodes to). */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffd]/g

const printable = (s: string): string => s.replace(UNPRINTABLE, '?')

/**
 * Why `text` is binary rather than a manifest (an image given by mistake:
 * `manifest --check IMAGE`, a manifest URL that serves the image), or
 * undefined. Said plainly instead of JSON.parse quoting the bytes.
 */
const binaryProblem = (text: string): string | undefined => {
  const head = text.slice(0, 4096)
  if (head.search(UNPRINTABLE) < 0) return undefined
  const kind = head.startsWith('hsqs') ? 'a squashfs image' : 'binary data'
  return `is not a manifest: it is ${kind} (starts with ${JSON.stringify(printable(head.slice(0, 4)))}), not JSON text; give the manifest (JSON) of the image, e.g. the file \`boot-agent manifest IMAGE --out FILE\` writes`
}

const toJson = (input: unknown): unknown => {
  const text = typeof input === 'string' ? input : input instanceof Uint8Array ? Buffer.from(input).toString('utf8') : undefined
  if (text === undefined) return input
  if (text.length > MAX_MANIFEST_CHARS) throw new ManifestError('$', `is ${text.length} characters, more than ${MAX_MANIFEST_CHARS}`)
  const binary = binaryProblem(text)
  if (binary) throw new ManifestError('$', binary)
  let json: unknown
  try {
    json = JSON.parse(text) as unknown
  } catch (e) {
    // JSON.parse quotes the input it choked on: keep the message printable.
    throw new ManifestError('$', `is not JSON: ${printable(e instanceof Error ? e.message : String(e))}`)
  }
  const dup = firstDuplicateKey(text)
  if (dup) throw new ManifestError(dup.path, `has the key ${JSON.stringify(printable(dup.key))} twice: JSON readers disagree on which one counts, so the manifest is refused; publish it again (boot-agent manifest writes each key once)`)
  return json
}

/** The manifest describes the image it was pinned to (ParseManifestOptions.pinned). */
const checkPinned = (m: Manifest, pin: { sha256: string; size: number; by: string }, url: string | undefined): void => {
  const what = `manifest (against ${pin.by})`
  if (m.sha256 !== pin.sha256) throw new IntegrityError({ algorithm: 'sha256', expected: pin.sha256, found: m.sha256, ...(url !== undefined ? { url } : {}), what })
  if (m.size !== pin.size) throw new SizeError({ expected: pin.size, found: m.size, ...(url !== undefined ? { url } : {}), what })
}

/**
 * Validates a manifest in its WIRE form (docs/manifest.md: chunks as
 * `[offset, size, sha256]`) — JSON text, UTF-8 bytes or the parsed JSON
 * value — and returns it typed (chunks as {@link Chunk} objects). Throws ManifestError (EMANIFEST, `field` = JSON path) for
 * any schema problem and SignatureError (ESIGNATURE) when a required signature
 * is missing or does not verify.
 */
export const parseManifest = (input: unknown, opts: ParseManifestOptions = {}): Manifest => {
  let base: URL | undefined
  if (opts.baseUrl !== undefined) {
    try {
      base = new URL(opts.baseUrl)
    } catch {
      throw new ConfigError('baseUrl', `not a valid absolute URL: ${JSON.stringify(opts.baseUrl)}`)
    }
  }
  const json = toJson(input)
  if (isObj(json) && 'schema' in json && json.schema !== MANIFEST_SCHEMA) {
    // Checked before the other keys: a newer schema may legitimately have fields we do not know.
    throw new ManifestError('$.schema', `unsupported schema version ${JSON.stringify(json.schema)} (this agent reads ${MANIFEST_SCHEMA})`)
  }
  const top = ['schema', 'name', 'format', 'created', 'size', 'sha256', 'chunking', 'urls', 'chunks', 'xxh64Segments', 'arch', 'fsverityDigest', 'signature'] as const
  const o = expectObject(json, '$', top, top.filter((k) => k !== 'signature' && k !== 'xxh64Segments' && k !== 'arch' && k !== 'fsverityDigest'))
  const size = expectSize(o.size, '$.size', 1)
  const chunking = parseChunking(o.chunking, '$.chunking')
  const urls = parseUrls(o.urls, '$.urls', base)
  const m: Manifest = {
    schema: MANIFEST_SCHEMA,
    name: parseName(o.name, '$.name'),
    format: (() => {
      const f = expectString(o.format, '$.format')
      if (!FORMAT_RE.test(f)) throw new ManifestError('$.format', `must be a short lower-case token like "squashfs", got ${JSON.stringify(f.slice(0, 64))}`)
      return f
    })(),
    created: parseCreated(o.created, '$.created'),
    size,
    sha256: expectHex64(o.sha256, '$.sha256'),
    chunking,
    chunks: parseChunks(o.chunks, '$.chunks', size, chunking),
    urls: urls.raw,
  }
  if (o.xxh64Segments !== undefined) m.xxh64Segments = parseSegments(o.xxh64Segments, '$.xxh64Segments', size)
  if (o.arch !== undefined) {
    const a = expectString(o.arch, '$.arch')
    if (!ARCH_RE.test(a)) throw new ManifestError('$.arch', `must be an architecture as uname -m spells it (x86_64, aarch64, …), got ${JSON.stringify(printable(a.slice(0, 40)))}`)
    m.arch = a
  }
  if (o.fsverityDigest !== undefined) m.fsverityDigest = expectHex64(o.fsverityDigest, '$.fsverityDigest')
  if (o.signature !== undefined) m.signature = parseSignature(o.signature, '$.signature')

  if (opts.publicKey !== undefined) {
    // Over the URLs as written: that is what the publisher signed.
    verifyManifestSignature(m, opts.publicKey)
  } else if (opts.requireSignature && !m.signature) {
    throw new SignatureError(`manifest ${m.name} is not signed, and a signature is required`, { manifest: m.name, sha256: m.sha256, reason: 'unsigned' })
  }
  if (opts.pinned) checkPinned(m, opts.pinned, opts.baseUrl)
  m.urls = urls.resolved
  return m
}
