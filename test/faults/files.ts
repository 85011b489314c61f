/**
 * What the fault campaigns read back from disk: every file under a
 * directory, and the content-addressed object names the cache and the head's
 * store use (`sha256/ab/<62 hex>`), so a check can hash each object against its name.
 */
import { createHash } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join, relative } from 'node:path'

/** An object's path under `objects/sha256/`: two hex digits, a slash, 62 more (a temp file left by a kill is not one). */
export const OBJECT_NAME = /^[0-9a-f]{2}\/[0-9a-f]{62}$/

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Every regular file under `dir` (relative paths), sorted; none when `dir` is missing. */
export const filesUnder = async (dir: string): Promise<string[]> => {
  const out: string[] = []
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name)
      if (e.isDirectory()) await walk(p)
      else out.push(relative(dir, p))
    }
  }
  await walk(dir)
  return out.sort()
}
