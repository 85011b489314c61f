/**
 * The attack of issue #22's finding 2, as a test writes it: a cached object's
 * bytes replaced (same size), and its metadata recomputed to match — the
 * xxh64 of every segment AND the chunk list's sha256s — so that nothing on
 * the cache partition disagrees with the forged bytes. Only a reference off
 * the partition (the manifest) can tell.
 */
import { createHash, randomBytes } from 'node:crypto'
import { open, readFile, writeFile } from 'node:fs/promises'
import { xxh64Segments } from '../../agent/hash/segments.js'

/** Overwrites `bytes` bytes at `at` with random ones and rewrites `<object>.meta.json` to describe the result. */
export const forgeCachedObject = async (objectPath: string, opts: { at: number; bytes?: number }): Promise<void> => {
  const n = opts.bytes ?? 4096
  const fh = await open(objectPath, 'r+')
  await fh.write(randomBytes(n), 0, n, opts.at)
  await fh.close()
  const data = await readFile(objectPath)
  const meta = JSON.parse(await readFile(`${objectPath}.meta.json`, 'utf8')) as { chunkSizes: number[]; chunkSha256: string; xxh64: string[] }
  let off = 0
  meta.chunkSha256 = meta.chunkSizes
    .map((size) => {
      const d = createHash('sha256').update(data.subarray(off, off + size)).digest('hex')
      off += size
      return d
    })
    .join('')
  meta.xxh64 = (await xxh64Segments(objectPath, { threads: 1 })).xxh64
  await writeFile(`${objectPath}.meta.json`, JSON.stringify(meta))
}
