/** The manifest module's public API (SPEC §4). See docs/manifest.md for the wire format. */
export type { Chunk, ChunkingParams, Manifest, ManifestSignature } from './types.js'
export {
  CDC_ALGORITHM,
  DEFAULT_CHUNKING,
  Chunker,
  assertChunkingParams,
  chunkSizes,
  chunkingForAverage,
  chunkingProblem,
  gearTable,
} from './cdc.js'
export { hashFile, hashRanges, type ByteRange, type HashRangesOptions } from '../hash/ranges.js'
export { buildManifest, imageFileSize, type BuildManifestOptions } from './build.js'
export { MANIFEST_SCHEMA, MAX_CHUNKS, parseManifest, type ParseManifestOptions } from './schema.js'
export { canonicalBytes, serializeManifest, toWire, type WireChunk, type WireManifest } from './serialize.js'
export { generateKeyPair, keyIdOf, signManifest, toPrivateKey, toPublicKey, verifyManifestSignature, type KeyInput, type KeyPairPem } from './sign.js'
