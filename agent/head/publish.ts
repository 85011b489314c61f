/**
 * Publishing an image into the head node's store (`boot-agent publish`):
 * store the bytes under their digest, write the manifest, move the name.
 *
 * The manifest is built from the stored copy, not the source file, so what
 * the manifest pins is exactly what the store holds even if the source is
 * changed while it is being published.
 */
import { stat } from 'node:fs/promises'
import { ConfigError, IntegrityError } from '../core/errors.js'
import { type Logger, logOp, silentLogger } from '../core/log.js'
import type { Manifest } from '../manifest/types.js'
import { type Architecture, nameProblem } from './names.js'
import { ImageStore, type NameEntry } from './store.js'
import { faultPoint } from '../core/fault.js'

/** Builds the manifest of an image file (agent/manifest's buildManifest, adapted). */
export type ManifestBuilder = (
  imagePath: string,
  opts: { name: string; urls: string[]; arch?: string; signal?: AbortSignal; onProgress?: (p: { bytesDone: number; bytesTotal: number }) => void },
) => Promise<Manifest>
/** Serialises (and, when a key was given, signs) a manifest into the text to serve. */
export type ManifestWriter = (manifest: Manifest) => Promise<string> | string

/** The head's own bytes endpoint for a digest, relative to the server (resolved against the manifest's URL). */
export const imagePathFor = (sha256: string): string => `/v1/images/by-digest/${sha256}/image`
export const manifestPathFor = (sha256: string): string => `/v1/images/by-digest/${sha256}/manifest`

export interface PublishOptions {
  /** The image file to publish. */
  image: string
  /** Image name, e.g. `CPE-base` (letters, digits, `. _ + -`; no `/`, no `..`). */
  name: string
  /** Store directory (created when missing). */
  store: string
  /** Architecture the image runs on; nodes of another architecture are never handed it. */
  arch: Architecture
  /** Mirror URLs (absolute http/https) that also serve these bytes; default: only the head's own endpoint. */
  mirrors?: string[]
  /** Image format recorded in the store; default detected (`squashfs` by its magic, else `raw`). */
  format?: string
  buildManifest: ManifestBuilder
  writeManifest: ManifestWriter
  /** Leave `arch` out of the manifest (for nodes whose agent predates the field: docs/manifest.md). Default false: it is written. */
  withoutManifestArch?: boolean
  /** True when `writeManifest` signs (`publish --sign`): decides what happens to a manifest already stored for the digest. */
  signs?: boolean
  /** Progress of the two reads of the image: `copy` into the store, then `manifest` (chunking and hashing the stored copy). */
  onProgress?: (p: PublishProgress) => void
  log?: Logger
  signal?: AbortSignal
  /** Clock, for tests. */
  now?: () => Date
}

/** One progress report of {@link publishImage}. */
export interface PublishProgress {
  phase: 'copy' | 'manifest'
  bytesDone: number
  bytesTotal: number
}

/** What is stored of the manifest already served for a digest (the fields a re-publish decides on). */
export interface StoredManifest {
  name: string
  urls: string[]
  signed: boolean
}

/** What a publish does with the by-digest manifest. */
export type ManifestAction =
  | { action: 'write'; name: string }
  | { action: 'keep' }
  | { action: 'refuse'; message: string }

/**
 * One manifest file per digest, served under every name that points at it
 * (issue #21). A re-publish of bytes already stored keeps that manifest —
 * its `name` (the first publisher's) and its signature — unless it signs
 * (then it is re-signed, keeping its name) or changes the mirrors (then it
 * is rewritten, keeping its name, and refused when that would strip a
 * signature: the publisher is told to add --sign).
 */
export const manifestAction = (stored: StoredManifest | undefined, next: { name: string; urls: string[]; signs: boolean; sha256: string }): ManifestAction => {
  if (!stored) return { action: 'write', name: next.name }
  if (next.signs) return { action: 'write', name: stored.name }
  const sameUrls = stored.urls.length === next.urls.length && stored.urls.every((u, i) => u === next.urls[i])
  if (sameUrls) return { action: 'keep' }
  if (stored.signed) {
    return {
      action: 'refuse',
      message: `the manifest stored for ${next.sha256} (published as ${stored.name}) is signed, and publishing it again unsigned with other mirrors would strip that signature from every name that points at it: run again with --sign KEY, or with the same --url list (${stored.urls.join(' ') || 'none'})`,
    }
  }
  return { action: 'write', name: stored.name }
}

/** The stored manifest's deciding fields (it was written by publish, so it parses; anything else counts as none). */
const storedManifest = (text: string | undefined): StoredManifest | undefined => {
  if (text === undefined) return undefined
  try {
    const v = JSON.parse(text) as { name?: unknown; urls?: unknown; signature?: unknown }
    if (typeof v.name !== 'string' || !Array.isArray(v.urls)) return undefined
    return { name: v.name, urls: v.urls.filter((u): u is string => typeof u === 'string'), signed: v.signature !== undefined }
  } catch {
    return undefined
  }
}

export interface PublishResult {
  name: string
  sha256: string
  size: number
  /** False when the store already held these bytes. */
  stored: boolean
  previous?: string
  manifestPath: string
  /** `written`, or `kept` when the manifest already stored for the digest was left as it was. */
  manifest: 'written' | 'kept'
  /** False when the name already pointed at this digest (nothing appended to its history). */
  moved: boolean
  entry: NameEntry
}

const checkMirror = (url: string): string => {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new ConfigError('--url', `${JSON.stringify(url)} is not an absolute URL`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError('--url', `${url} is not http or https`)
  return u.href
}

export const publishImage = async (opts: PublishOptions): Promise<PublishResult> => {
  const log = opts.log ?? silentLogger()
  const problem = nameProblem(opts.name)
  if (problem) throw new ConfigError('--name', `image name ${JSON.stringify(opts.name)} ${problem}`)
  const mirrors = (opts.mirrors ?? []).map(checkMirror)
  const store = new ImageStore(opts.store)
  return logOp(log, 'publish', { name: opts.name, image: opts.image }, async () => {
    const total = await stat(opts.image).then((st) => st.size, () => 0)
    const obj = await store.storeObject(opts.image, {
      arch: opts.arch,
      ...(opts.format ? { format: opts.format } : {}),
      signal: opts.signal,
      ...(opts.onProgress ? { onProgress: (bytesDone: number) => opts.onProgress?.({ phase: 'copy', bytesDone, bytesTotal: Math.max(total, bytesDone) }) } : {}),
    })
    faultPoint('head.publish.stored')
    const stored = store.objectPath(obj.sha256)
    // Mirrors first: large sites serve bytes from their object store (SPEC §10).
    // Without mirrors the manifest names the head's own endpoint, relative to
    // the server so that it holds whatever address nodes reach the head by.
    const urls = mirrors.length ? mirrors : [imagePathFor(obj.sha256)]
    const decision = manifestAction(storedManifest(await store.manifestText(obj.sha256)), { name: opts.name, urls, signs: opts.signs === true, sha256: obj.sha256 })
    if (decision.action === 'refuse') throw new ConfigError('--sign', decision.message)
    if (decision.action === 'write') {
      const built = await opts.buildManifest(stored, {
        name: decision.name,
        urls,
        ...(opts.withoutManifestArch ? {} : { arch: opts.arch }),
        signal: opts.signal,
        ...(opts.onProgress ? { onProgress: (p: { bytesDone: number; bytesTotal: number }) => opts.onProgress?.({ phase: 'manifest', ...p }) } : {}),
      })
      if (built.sha256 !== obj.sha256 || built.size !== obj.size) {
        // The stored object changed between copy and manifest: refuse to pin it.
        throw new IntegrityError({ algorithm: 'sha256', expected: obj.sha256, found: built.sha256, what: `stored image ${stored}` })
      }
      const manifest: Manifest = { ...built, name: decision.name, urls }
      await store.writeManifest(manifest, await opts.writeManifest(manifest))
    } else {
      log.info({ sha256: obj.sha256 }, 'manifest already stored for these bytes: kept as it is (its name and signature)')
    }
    faultPoint('head.publish.manifest')
    const { unchanged, ...entry } = await store.moveName(opts.name, { sha256: obj.sha256, size: obj.size, arch: opts.arch }, opts.now?.() ?? new Date())
    if (unchanged) log.info({ name: opts.name, sha256: obj.sha256 }, 'name already points at these bytes: history unchanged')
    else log.info({ name: opts.name, sha256: obj.sha256, size: obj.size, previous: entry.previous, stored: obj.created }, 'name moved')
    return {
      name: opts.name,
      sha256: obj.sha256,
      size: obj.size,
      stored: obj.created,
      ...(!unchanged && entry.previous ? { previous: entry.previous } : {}),
      manifestPath: store.manifestPath(obj.sha256),
      manifest: decision.action === 'write' ? 'written' : 'kept',
      moved: !unchanged,
      entry,
    }
  })
}
