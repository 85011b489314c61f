// The agent's bundle, shared by scripts/bundle.mjs (dist/) and the tests
// (test/helpers/bundle.ts, a bundle per test directory).
//
// esbuild with code splitting: OUTDIR/boot-agent.mjs is the entry (the CLI
// dispatch only) and OUTDIR/chunks/*.mjs hold the rest, so each command loads
// and parses only its own code and dependencies, and `--help` loads almost
// nothing (one 1.5 MB file had to be parsed whole on every start). pino is
// OUTDIR/chunks/pino.cjs, loaded at the first line logged (agent/core/log.ts). The
// initramfs still has no node_modules: the directory is self-contained and is
// installed whole (dracut/50boot-agent/module-setup.sh).
import { build } from 'esbuild'
import { chmod, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const ENTRY_NAME = 'boot-agent.mjs'
export const CHUNK_DIR = 'chunks'
/** pino and its dependencies as one CommonJS file in CHUNK_DIR (agent/core/log.ts requires it). */
export const PINO_FILE = 'pino.cjs'
/** The bundle's files in CHUNK_DIR, by name. */
export const isChunkFile = (name) => name.endsWith('.mjs') || name === PINO_FILE

/** The esbuild options for a bundle in `outdir`. */
export const bundleOptions = (outdir) => ({
  entryPoints: { 'boot-agent': join(REPO, 'agent', 'main.ts') },
  outdir,
  entryNames: '[name]',
  // Content-hashed names: the same code keeps its chunk's name across rebuilds.
  chunkNames: `${CHUNK_DIR}/[name]-[hash]`,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  // fetch-blob (under node-fetch) falls back to web-streams-polyfill only when
  // node:stream/web is missing, which never happens on Node >= 16.5: leave the
  // 184 KB polyfill out instead of parsing it on every download.
  alias: { 'web-streams-polyfill/dist/ponyfill.es2018.js': join(REPO, 'scripts', 'no-web-streams-polyfill.cjs') },
  // Some dependencies are CommonJS and call require(); give every ESM chunk one.
  banner: { js: "import { createRequire as __bootAgentCreateRequire } from 'node:module';const require = __bootAgentCreateRequire(import.meta.url);" },
  // agent/core/log.ts loads pino synchronously at a logger's first use, from this
  // file beside the chunks (see pinoOptions): not parsed by a command that logs nothing.
  define: { __BOOT_AGENT_PINO__: JSON.stringify(`./${PINO_FILE}`) },
  write: false,
  logLevel: 'warning',
})

/** The esbuild options for pino as one CommonJS file in `outdir`/CHUNK_DIR. */
export const pinoOptions = (outdir) => ({
  entryPoints: [createRequire(import.meta.url).resolve('pino')],
  outfile: join(outdir, CHUNK_DIR, PINO_FILE),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  write: false,
  logLevel: 'warning',
})

const writeAtomic = async (path, contents, mode) => {
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, contents, { mode })
  await chmod(tmp, mode)
  await rename(tmp, path)
}

/**
 * Builds the bundle into `outdir` and returns the entry's path. Chunks are
 * written first and the entry last, each through a temporary file and a
 * rename, so a process started meanwhile sees the old or the new entry whole,
 * with its chunks present. Chunks of earlier builds are removed, so the
 * directory holds exactly one bundle (what the initramfs and the VM tests'
 * input hash take); as with any program replaced in place, a process started
 * from an older build may then fail to load a chunk it had not loaded yet.
 */
export const bundle = async (outdir) => {
  const out = resolve(outdir)
  const [result, pinoResult] = await Promise.all([build(bundleOptions(out)), build(pinoOptions(out))])
  const entry = join(out, ENTRY_NAME)
  await mkdir(join(out, CHUNK_DIR), { recursive: true })
  const files = [...result.outputFiles, ...pinoResult.outputFiles].sort((a, b) => Number(a.path === entry) - Number(b.path === entry))
  for (const f of files) {
    const exec = f.contents[0] === 0x23 && f.contents[1] === 0x21 // #!
    await writeAtomic(f.path, f.contents, exec ? 0o755 : 0o644)
  }
  const keep = new Set(files.map((f) => basename(f.path)))
  for (const name of await readdir(join(out, CHUNK_DIR))) {
    // (*.tmp: another build writing into the same directory right now.)
    if (isChunkFile(name) && !keep.has(name)) await rm(join(out, CHUNK_DIR, name), { force: true })
  }
  return entry
}
