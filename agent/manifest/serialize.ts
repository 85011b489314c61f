/**
 * The manifest's wire form (docs/manifest.md): one canonical JSON text per
 * manifest, so that a signature over it means one thing.
 *
 * Canonical form = `JSON.stringify` (ECMA-262) of an object with exactly these
 * keys in this order, no whitespace:
 *
 *   schema, name, format, created, size, sha256,
 *   chunking {algorithm, minSize, avgSize, maxSize},
 *   urls, chunks, xxh64Segments (only when present), arch (only when present),
 *   fsverityDigest (only when present),
 *   signature {algorithm, keyId, value} (only when signed)
 *
 * and each chunk written compactly as `[offset, size, "sha256"]`. The bytes
 * signed are the canonical form of the manifest WITHOUT `signature`
 * ({@link canonicalBytes}). A manifest file is its canonical form plus "\n".
 */
import type { Chunk, Manifest } from './types.js'

/** One chunk on the wire: `[offset, size, sha256]`. */
export type WireChunk = [number, number, string]

/** The manifest exactly as it is on the wire (JSON). */
export interface WireManifest {
  schema: 1
  name: string
  format: string
  created: string
  size: number
  sha256: string
  chunking: { algorithm: string; minSize: number; avgSize: number; maxSize: number }
  urls: string[]
  chunks: WireChunk[]
  xxh64Segments?: string[]
  arch?: string
  fsverityDigest?: string
  signature?: { algorithm: 'ed25519'; keyId: string; value: string }
}

/** The top-level keys of the wire form, in canonical order. */
export const WIRE_KEYS = ['schema', 'name', 'format', 'created', 'size', 'sha256', 'chunking', 'urls', 'chunks', 'xxh64Segments', 'arch', 'fsverityDigest', 'signature'] as const

export const toWireChunk = (c: Chunk): WireChunk => [c.offset, c.size, c.sha256]

/** Builds the wire object with keys in canonical order (so JSON.stringify keeps it). */
export const toWire = (m: Manifest, opts: { withSignature?: boolean } = {}): WireManifest => {
  const w: WireManifest = {
    schema: m.schema,
    name: m.name,
    format: m.format,
    created: m.created,
    size: m.size,
    sha256: m.sha256,
    chunking: {
      algorithm: m.chunking.algorithm,
      minSize: m.chunking.minSize,
      avgSize: m.chunking.avgSize,
      maxSize: m.chunking.maxSize,
    },
    urls: [...m.urls],
    chunks: m.chunks.map(toWireChunk),
  }
  // Written only when present, so that a manifest without it keeps its canonical form (and signature).
  if (m.xxh64Segments) w.xxh64Segments = [...m.xxh64Segments]
  if (m.arch !== undefined) w.arch = m.arch
  if (m.fsverityDigest) w.fsverityDigest = m.fsverityDigest
  if ((opts.withSignature ?? true) && m.signature) {
    w.signature = { algorithm: m.signature.algorithm, keyId: m.signature.keyId, value: m.signature.value }
  }
  return w
}

/**
 * The canonical serialisation (no trailing newline). Signed manifests include
 * their `signature` last; see {@link canonicalBytes} for what is signed.
 */
export const serializeManifest = (m: Manifest): string => JSON.stringify(toWire(m))

/** The bytes a signature covers: the canonical form without `signature`, UTF-8. */
export const canonicalBytes = (m: Manifest): Buffer => Buffer.from(JSON.stringify(toWire(m, { withSignature: false })), 'utf8')
