/**
 * Manifest building for head-node tests. The manifest module
 * (agent/manifest/) is being written in parallel; until it is merged, this
 * builds a valid schema-1 manifest the simple way: fixed 1 MiB chunks, each
 * with its sha256. It is replaced by the real buildManifest on merge.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Manifest } from '../../agent/manifest/types.js'

const CHUNK_BYTES = 1 << 20

export const buildManifest = async (imagePath: string, opts: { name: string; urls: string[] }): Promise<Manifest> => {
  const bytes = await readFile(imagePath)
  const chunks = []
  for (let offset = 0, index = 0; offset < bytes.length; offset += CHUNK_BYTES, index++) {
    const part = bytes.subarray(offset, Math.min(bytes.length, offset + CHUNK_BYTES))
    chunks.push({ index, offset, size: part.length, sha256: createHash('sha256').update(part).digest('hex') })
  }
  return {
    schema: 1,
    name: opts.name,
    format: 'squashfs',
    created: new Date().toISOString(),
    size: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    chunking: { algorithm: 'fixed', minSize: CHUNK_BYTES, avgSize: CHUNK_BYTES, maxSize: CHUNK_BYTES },
    chunks,
    urls: opts.urls,
  }
}

export const serializeManifest = (m: Manifest): string => JSON.stringify(m, null, 2) + '\n'
