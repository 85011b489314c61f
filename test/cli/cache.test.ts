/**
 * `boot-agent cache ls|gc` through the bundled CLI, beyond what
 * test/cli/fetch.test.ts (ls/gc after a fetch, --keep 0) and
 * test/cli/usage.test.ts (usage errors) check: the order of ls, gc's default
 * keep, and pins.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { Cache } from '../../agent/cache/store.js'
import { publishBytes } from '../helpers/cache.js'
import { runCli } from '../helpers/run-cli.js'

const ago = (minutes: number): string => new Date(Date.now() - minutes * 60_000).toISOString()

/** A cache with four objects, used 1, 10, 100 and 1000 minutes ago (returned newest first). */
const fourObjects = async (t: Test): Promise<{ dir: string; shas: string[] }> => {
  const dir = t.testdir()
  const cache = await Cache.open(dir)
  const shas: string[] = []
  for (const [i, minutes] of [1000, 1, 100, 10].entries()) {
    const { m } = await publishBytes(cache, randomBytes(1000 * (i + 1)), { name: `img-${minutes}`, lastUsedAt: ago(minutes) })
    shas[[1, 10, 100, 1000].indexOf(minutes)] = m.sha256
  }
  return { dir, shas }
}

type Listed = { objects: { sha256: string; size: number; names: string[]; lastUsedAt: string; corruptChunks: number[] }[]; problems: unknown[] }

const ls = (dir: string): Listed => {
  const r = runCli(['cache', 'ls', '--cache', dir, '--json'])
  if (r.status !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout) as Listed
}

t.test('ls lists the objects most recently used first, as JSON and as one text line each', async (t) => {
  const { dir, shas } = await fourObjects(t)
  const j = ls(dir)
  t.same(j.objects.map((o) => o.sha256), shas)
  t.match(j.objects[0], { names: ['img-1'], corruptChunks: [] })
  t.same(j.problems, [])
  const text = runCli(['cache', 'ls', '--cache', dir])
  t.equal(text.status, 0)
  const lines = text.stdout.trimEnd().split('\n')
  t.equal(lines.length, 4)
  lines.forEach((l, i) => t.match(l, new RegExp(`^${shas[i]}\\s+\\d+\\s+used .* img-`)))
})

t.test('gc keeps the two most recently used by default (the booted image and the previous one)', async (t) => {
  const { dir, shas } = await fourObjects(t)
  const r = runCli(['cache', 'gc', '--cache', dir, '--json'])
  t.equal(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { removed: { sha256: string; size: number }[]; freedBytes: number }
  t.same(out.removed.map((o) => o.sha256).sort(), [shas[2], shas[3]].sort())
  t.equal(out.freedBytes, out.removed.reduce((n, o) => n + o.size, 0))
  t.same(ls(dir).objects.map((o) => o.sha256), shas.slice(0, 2))
})

t.test('a pinned object survives gc even when it is the least recently used', async (t) => {
  const { dir, shas } = await fourObjects(t)
  const oldest = shas[3]!
  const r = runCli(['cache', 'gc', '--cache', dir, '--keep', '1', '--pin', oldest])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /object\(s\) removed, \d+ bytes freed/)
  const left = ls(dir).objects.map((o) => o.sha256)
  t.ok(left.includes(oldest), 'the pin kept it')
  t.notOk(left.includes(shas[2]!), 'an unpinned older object went')
})

t.test('a --pin that is not a sha256 is refused before the cache is touched', async (t) => {
  const { dir } = await fourObjects(t)
  const r = runCli(['cache', 'gc', '--cache', dir, '--keep', '0', '--pin', 'not-a-digest'])
  t.equal(r.status, 2)
  t.match(r.stderr, /--pin: not a sha256: not-a-digest/)
  t.equal(ls(dir).objects.length, 4, 'nothing removed')
})
