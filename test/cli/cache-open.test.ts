/**
 * The commands given a directory that is not a cache (#22 finding 5): the
 * read-only ones (`cache ls`, `cache gc`, `verify`) and `fetch` never create
 * anything in it or change its mode; `fetch` makes a cache only in a new
 * directory or an empty one of its own, and only once it has the manifest. Through the real bundled CLI, on
 * scratch directories shaped like /tmp (mode 1777, other users' files).
 */
import t from 'tap'
import { chmod, lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli } from '../helpers/run-cli.js'
import { existsSync } from 'node:fs'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { gate } from '../helpers/capability.js'
import { manifestFor, writeImage } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'

/** Mode (with the sticky bit), owner and every entry with its content: what must not change. */
const snapshot = async (dir: string) => {
  const st = await lstat(dir)
  const entries: Record<string, string> = {}
  for (const name of (await readdir(dir)).sort()) {
    const e = await lstat(join(dir, name))
    entries[name] = `${(e.mode & 0o7777).toString(8)}:${e.uid}:${e.gid}:${e.isFile() ? await readFile(join(dir, name), 'utf8') : 'dir'}`
  }
  return { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, entries }
}

/** A directory like /tmp: mode 1777, with `files` in it. */
const sharedDir = async (t: { testdir(): string }, files: Record<string, string>): Promise<string> => {
  const dir = join(t.testdir(), 'shared')
  await mkdir(dir)
  await chmod(dir, 0o1777)
  for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body, { mode: 0o644 })
  return dir
}

const NO_SERVER = 'http://127.0.0.1:9/m.manifest.json'
const readOnly = (dir: string): string[][] => [
  ['cache', 'ls', '--cache', dir],
  ['cache', 'ls', '--cache', dir, '--json'],
  ['cache', 'gc', '--cache', dir, '--keep', '0'],
  ['verify', '--cache', dir],
  ['verify', '--cache', dir, '--strong'],
]

t.test('a shared directory with files in it: every command refuses, naming it, and leaves mode, owner and listing as they were', async (t) => {
  const dir = await sharedDir(t, { 'someone-elses.txt': 'not yours\n' })
  const before = await snapshot(dir)
  t.equal(before.mode, '1777')
  for (const args of [...readOnly(dir), ['fetch', NO_SERVER, '--cache', dir]]) {
    const r = runCli(args)
    const what = args.slice(0, 2).join(' ') + (args.includes('--strong') ? ' --strong' : args.includes('--json') ? ' --json' : '')
    t.equal(r.status, 1, `${what}: refused (exit 1)`)
    t.match(r.stderr, dir, `${what}: the message names the directory`)
    t.match(r.stderr, /is not a boot-agent cache/, `${what}: and says why`)
    t.notMatch(r.stderr, /127\.0\.0\.1:9/, `${what}: refused before any request`)
    t.same(await snapshot(dir), before, `${what}: mode, owner and listing unchanged`)
  }
})

t.test('an empty shared directory: the read-only commands answer (an empty cache) and change nothing; fetch refuses to make it root-only', async (t) => {
  const dir = await sharedDir(t, {})
  const before = await snapshot(dir)
  for (const args of readOnly(dir)) {
    const r = runCli(args)
    t.equal(r.status, 0, `${args.join(' ')}: answered: ${r.stderr}`)
    t.same(await snapshot(dir), before, `${args.slice(0, 2).join(' ')}: unchanged`)
  }
  const f = runCli(['fetch', NO_SERVER, '--cache', dir])
  t.equal(f.status, 1, 'fetch refused')
  t.match(f.stderr, new RegExp(`${dir}.*shared directory \\(mode 1777\\)`))
  t.same(await snapshot(dir), before, 'fetch: unchanged')
})

t.test('fetch into a new path creates the cache, root-only, once it has the manifest; a failed fetch creates nothing', gate('nginx'), async (t) => {
  const dir = join(t.testdir(), 'new', 'cache')
  const r = runCli(['fetch', NO_SERVER, '--cache', dir])
  t.equal(r.status, 1, 'no server: the fetch itself fails')
  t.match(r.stderr, /127\.0\.0\.1:9/, 'the network error, not a cache refusal')
  t.notOk(existsSync(join(t.testdir(), 'new')), 'nothing made for a fetch that never had a manifest')
  const www = join(t.testdir(), 'www')
  await mkdir(www)
  const ng = await startNginx(www)
  t.teardown(() => ng.stop())
  const data = await writeImage(join(www, 'img.sqfs'), 300 * 1024, 'cache-open')
  await writeFile(join(www, 'img.json'), serializeManifest(manifestFor(data, ['img.sqfs'])))
  const ok = runCli(['fetch', `${ng.url}/img.json`, '--cache', dir])
  t.equal(ok.status, 0, ok.stderr)
  for (const d of [dir, join(dir, 'objects'), join(dir, 'objects', 'sha256'), join(dir, 'tmp')]) {
    t.equal((await lstat(d)).mode & 0o7777, 0o700, `${d} made 0700`)
  }
})
