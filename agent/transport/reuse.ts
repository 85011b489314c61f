/**
 * Delta: the missing chunks of a download that other cached objects
 * already hold (their donors, cache/donors.ts) are copied from there
 * instead of downloaded. A donor is another object on an untrusted disk:
 * each chunk is copied only if its bytes match the manifest's sha256.
 */
import { createHash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import type { Logger } from '../core/log.js'
import type { Chunk } from '../manifest/types.js'
import { findChunkSources } from '../cache/donors.js'
import type { PartialObject } from '../cache/partial.js'
import type { Cache } from '../cache/store.js'
import { ChunkWriter } from './chunk-writer.js'

export interface ReuseOptions {
  chunks: readonly Chunk[]
  /** The download's partial object: its missing chunks are looked for; copied ones are recorded in it. */
  partial: PartialObject
  cache: Cache
  /** The object being written (not a donor to itself). */
  sha256: string
  /** Write buffer size (ChunkWriter). */
  bufBytes: number
  /** Writes verified bytes into the partial file. */
  write: (b: Uint8Array, pos: number) => Promise<void>
  log: Logger
  signal: AbortSignal
}

/** Copies the missing chunks found (and verified) in other cached objects; returns the bytes copied. */
export const reuseChunks = async (o: ReuseOptions): Promise<number> => {
  const missing = o.partial.missing()
  if (!missing.length) return 0
  const wanted = new Set(missing.map((i) => o.chunks[i]!.sha256))
  const sources = await findChunkSources(o.cache, wanted, o.sha256)
  if (!sources.size) return 0
  // Donor chunks are verified here, on this thread (a rare path).
  const w = new ChunkWriter(o.bufBytes, { verify: async (_, entries) => ({ ok: entries.map(() => true) }), write: o.write, onWritten: (idx) => o.partial.record(idx) })
  const handles = new Map<string, FileHandle>()
  const scratch = Buffer.allocUnsafe(o.bufBytes)
  let reused = 0
  try {
    for (const i of missing) {
      if (o.signal.aborted) throw o.signal.reason
      const c = o.chunks[i]!
      const src = sources.get(c.sha256)
      if (!src) continue
      let fh = handles.get(src.path)
      if (!fh) {
        fh = await open(src.path, 'r')
        handles.set(src.path, fh)
      }
      const { bytesRead } = await fh.read(scratch, 0, c.size, src.offset)
      const bytes = scratch.subarray(0, bytesRead)
      if (bytesRead !== c.size || createHash('sha256').update(bytes).digest('hex') !== c.sha256) {
        o.log.warn({ object: src.object, chunk: c.sha256 }, 'cached donor chunk does not verify; downloading it instead')
        continue
      }
      await w.add(c, bytes)
      reused += c.size
    }
    await w.finish()
  } finally {
    for (const fh of handles.values()) await fh.close().catch(() => undefined)
  }
  if (reused) o.log.info({ bytesReused: reused }, 'reused chunks from other cached objects')
  return reused
}
