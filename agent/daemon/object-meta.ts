/**
 * The cache object's metadata file, `<object>.meta.json` (layout owned by the
 * pipeline's agent/cache/store.ts and meta.ts: {schema, size, sha256, xxh64
 * (one digest per 64 MiB segment), the chunk list (schema 3: chunkSizes +
 * chunkSha256; schema 2: chunks as objects), verifiedAt, lastUsedAt, names[],
 * urls[], corruptChunks?}), read leniently for what the daemon shows (image
 * names, corrupt marks): the schema and the digests are not looked at, so
 * schemas 1–3 all read. Marking goes through the pipeline's
 * Cache.markCorrupt (self-check.ts).
 */
import { readFile } from 'node:fs/promises'
import type { Chunk } from '../manifest/types.js'
import { chunkListProblem, decodeChunkList } from '../cache/meta.js'
import { BootAgentError } from '../core/errors.js'

export interface ObjectMeta {
  size: number
  sha256: string
  chunks: Chunk[]
  names: string[]
  corruptChunks: number[]
}

const SHA256 = /^[0-9a-f]{64}$/
/** `<cacheDir>/objects/sha256/<2 hex>/<62 hex>`: the only object paths we accept. */
export const OBJECT_PATH = /^(.*)\/objects\/sha256\/([0-9a-f]{2})\/([0-9a-f]{62})$/

/** The object's digest and cache dir, when `path` is laid out as a cache object. */
export const parseObjectPath = (path: string): { cacheDir: string; sha256: string } | undefined => {
  const m = OBJECT_PATH.exec(path)
  return m ? { cacheDir: m[1] ?? '', sha256: `${m[2]}${m[3]}` } : undefined
}

export const metaPathOf = (objectPath: string): string => `${objectPath}.meta.json`

/**
 * The chunk list in either form the cache writes (schema 3: chunkSizes +
 * chunkSha256; schemas 1–2: chunk objects), checked by the cache's own rules
 * (cache/meta.ts); none when the file has no list.
 */
const chunkList = (raw: Record<string, unknown>, size: number, path: string): Chunk[] => {
  if (raw.chunkSizes !== undefined || raw.chunkSha256 !== undefined) {
    const decoded = decodeChunkList(raw.chunkSizes, raw.chunkSha256, size)
    if (typeof decoded === 'string') throw new BootAgentError('ECACHE', `${path}: ${decoded}`)
    return decoded
  }
  if (!Array.isArray(raw.chunks) || raw.chunks.length === 0) return []
  const bad = chunkListProblem(raw.chunks, size)
  if (bad) throw new BootAgentError('ECACHE', `${path}: ${bad}`)
  return raw.chunks as Chunk[]
}

/** Reads and validates a meta file; throws an Error naming the bad field. */
export const readObjectMeta = async (objectPath: string): Promise<ObjectMeta & { raw: Record<string, unknown> }> => {
  const path = metaPathOf(objectPath)
  const v: unknown = JSON.parse(await readFile(path, 'utf8'))
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BootAgentError('ECACHE', `${path}: not a JSON object`)
  const raw = v as Record<string, unknown>
  if (!Number.isSafeInteger(raw.size)) throw new BootAgentError('ECACHE', `${path}: size is not an integer`)
  if (typeof raw.sha256 !== 'string' || !SHA256.test(raw.sha256)) throw new BootAgentError('ECACHE', `${path}: sha256 is not a hex sha256`)
  const chunks = chunkList(raw, raw.size as number, path)
  const names = Array.isArray(raw.names) ? raw.names.filter((n): n is string => typeof n === 'string') : []
  const corrupt = Array.isArray(raw.corruptChunks) ? raw.corruptChunks.filter((n): n is number => Number.isSafeInteger(n)) : []
  return { size: raw.size as number, sha256: raw.sha256, chunks, names, corruptChunks: corrupt, raw }
}

