/**
 * The image manifest (SPEC §4), as the rest of the agent sees it after
 * parsing and validation. The wire format (JSON, `schema: 1`) is documented in
 * docs/manifest.md; agent/manifest/schema.ts turns `unknown` into this type.
 *
 * An image's identity is (`size`, `sha256`). The cache key is the sha256,
 * never the name.
 */

/** Content-defined chunking parameters; part of the format so every publisher cuts identically. */
export interface ChunkingParams {
  /** Algorithm id, e.g. `fastcdc-gear-v1` (the gear table is derived from it). */
  algorithm: string
  minSize: number
  avgSize: number
  maxSize: number
}

/** One byte range of the image file, pinned by its sha256. */
export interface Chunk {
  /** Position in `Manifest.chunks` (0-based). */
  index: number
  offset: number
  size: number
  /** Lower-case hex sha256 of the chunk's bytes. */
  sha256: string
}

export interface ManifestSignature {
  algorithm: 'ed25519'
  /** sha256 (hex) of the public key's DER (SPKI), to say which key signed. */
  keyId: string
  /** base64 signature over the manifest's canonical form without `signature`. */
  value: string
}

export interface Manifest {
  schema: 1
  /** Human name of the image, e.g. `CPE-base`; never used as a cache key. */
  name: string
  /** Image format; `squashfs` today. */
  format: string
  /** ISO-8601 time the manifest was written. */
  created: string
  /** Size of the whole image in bytes. */
  size: number
  /** Lower-case hex sha256 of the whole image: its identity. */
  sha256: string
  chunking: ChunkingParams
  /** Contiguous, in order, covering [0, size) exactly. */
  chunks: Chunk[]
  /**
   * Lower-case hex xxh64 (seed 0, 16 digits) of each 64 MiB segment of the
   * image, in order (hash/xxh64-format.ts: `segmentCount(size)` of them):
   * what a cache hit's fast re-verification compares the object with, so
   * that its reference is what the head published and signed, never the
   * node's own metadata. Absent in manifests written before it existed:
   * such a hit is checked by the sha256 of every chunk instead.
   */
  xxh64Segments?: string[]
  /**
   * The architecture the image runs on, `uname -m` spelling (`x86_64`,
   * `aarch64`): a node of another one refuses it (EARCH) before fetching.
   * Absent in manifests written before it existed (docs/manifest.md,
   * "Rolling out `arch`").
   */
  arch?: string
  /**
   * The image's fs-verity digest (sha256, 4096-byte blocks, no salt: what
   * `fsverity digest` prints and the kernel measures of a sealed file,
   * hash/fsverity.ts), 64 lower-case hex digits. Optional (issue #19): absent
   * in manifests written before it, or with `--without-fsverity`.
   */
  fsverityDigest?: string
  /** Absolute http(s) URLs of the image, in preference order (relative ones resolved against the manifest's URL). */
  urls: string[]
  signature?: ManifestSignature
}
