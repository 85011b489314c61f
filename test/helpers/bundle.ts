/**
 * Builds the agent's bundle (as scripts/bundle.mjs does, with the same
 * options) into a test's own directory, so tests that run the real CLI as a
 * child process do not race on dist/. The bundle is the entry `boot-agent.mjs`
 * plus `chunks/*.mjs` and `chunks/pino.cjs` beside it; {@link bundleFiles} lists them.
 */
import { readdir } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { bundle, CHUNK_DIR, isChunkFile } from '../../scripts/bundle-lib.mjs'

/** Builds the bundle into `dir` and returns the entry's path (`dir/boot-agent.mjs`). */
export const bundleAgent = (dir: string): Promise<string> => bundle(dir)

/**
 * Every file of the bundle whose entry is `entry`, as paths relative to the
 * entry's directory, entry first, then the chunks sorted: what to copy or hash.
 */
export const bundleFiles = async (entry: string): Promise<string[]> => {
  const chunks = await readdir(join(dirname(entry), CHUNK_DIR)).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[]
    throw e
  })
  return [basename(entry), ...chunks.filter(isChunkFile).sort().map((n) => join(CHUNK_DIR, n))]
}
