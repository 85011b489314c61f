/**
 * Publishing an image into the head node's store (`boot-agent publish`):
 * store the bytes under their digest, write the manifest, move the name.
 *
 * The manifest is built from the stored copy, not the source file, so what
 * the manifest pins is exactly what the store holds even if the source is
 * changed while it is being published.
 */
import { ConfigError, IntegrityError } from '../core/errors.js'
import { type Logger, logOp, silentLogger } from '../core/log.js'
import type { Manifest } from '../manifest/types.js'
import { type Architecture, nameProblem } from './names.js'
import { ImageStore, type NameEntry } from './store.js'
import { faultPoint } from '../core/fault.js'

/** Builds the manifest of an image file (agent/manifest's buildManifest, adapted). */
export type ManifestBuilder = (imagePath: string, opts: { name: string; urls: string[]; signal?: AbortSignal }) => Promise<Manifest>
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
  log?: Logger
  signal?: AbortSignal
  /** Clock, for tests. */
  now?: () => Date
}

export interface PublishResult {
  name: string
  sha256: string
  size: number
  /** False when the store already held these bytes. */
  stored: boolean
  previous?: string
  manifestPath: string
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
    const obj = await store.storeObject(opts.image, { arch: opts.arch, ...(opts.format ? { format: opts.format } : {}), signal: opts.signal })
    faultPoint('head.publish.stored')
    const stored = store.objectPath(obj.sha256)
    // Mirrors first: large sites serve bytes from their object store (SPEC §10).
    // Without mirrors the manifest names the head's own endpoint, relative to
    // the server so that it holds whatever address nodes reach the head by.
    const urls = mirrors.length ? mirrors : [imagePathFor(obj.sha256)]
    const built = await opts.buildManifest(stored, { name: opts.name, urls, signal: opts.signal })
    if (built.sha256 !== obj.sha256 || built.size !== obj.size) {
      // The stored object changed between copy and manifest: refuse to pin it.
      throw new IntegrityError({ algorithm: 'sha256', expected: obj.sha256, found: built.sha256, what: `stored image ${stored}` })
    }
    const manifest: Manifest = { ...built, name: opts.name, urls }
    await store.writeManifest(manifest, await opts.writeManifest(manifest))
    faultPoint('head.publish.manifest')
    const entry = await store.moveName(opts.name, { sha256: obj.sha256, size: obj.size, arch: opts.arch }, opts.now?.() ?? new Date())
    log.info({ name: opts.name, sha256: obj.sha256, size: obj.size, previous: entry.previous, stored: obj.created }, 'name moved')
    return {
      name: opts.name,
      sha256: obj.sha256,
      size: obj.size,
      stored: obj.created,
      ...(entry.previous ? { previous: entry.previous } : {}),
      manifestPath: store.manifestPath(obj.sha256),
      entry,
    }
  })
}
