/**
 * Read-only commands (`cache ls`, `verify`) run by a user other than the
 * cache's owner (issue #21): the bundled CLI under
 * `setpriv --reuid=65534 --regid=65534 --clear-groups` (nobody). A cache an
 * operator made readable is listed and verified without touching a mode (no
 * chmod, no EPERM); a root-only cache (0700, the default: SPEC §12) is
 * refused with what to do, not a bare EACCES.
 */
import t, { type Test } from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { gate } from '../helpers/capability.js'
import { publishBytes } from '../helpers/cache.js'
import { seededBytes } from '../helpers/image.js'
import { BUNDLE } from '../helpers/run-cli.js'

/** The bundle copied where nobody can read it, and a runner of it as nobody. */
const asNobody = (t: Test) => {
  // Not tap's testdir: the worktree is not readable by nobody.
  const dir = mkdtempSync(join(tmpdir(), 'ba-nonroot-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  chmodSync(dir, 0o755)
  cpSync(join(BUNDLE, '..'), join(dir, 'dist'), { recursive: true })
  execFileSync('chmod', ['-R', 'a+rX', join(dir, 'dist')])
  const run = (args: string[]) => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, join(dir, 'dist', 'boot-agent.mjs'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn' },
      timeout: 60_000,
    })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  return { dir, run }
}

t.test('as nobody: a readable cache is listed and verified, nothing chmodded; a root-only one is refused saying why', gate('root'), async (t) => {
  const { dir, run } = asNobody(t)
  const cacheDir = join(dir, 'cache')
  const cache = await Cache.open(cacheDir)
  const { m } = await publishBytes(cache, seededBytes(200_000, 'nonroot'), { name: 'doc' })

  // Root-only, as made: a plain refusal naming the owner, the mode and what to do.
  for (const args of [['cache', 'ls', '--cache', cacheDir], ['verify', '--cache', cacheDir]]) {
    const r = run(args)
    t.equal(r.status, 1, args.join(' '))
    t.match(r.stderr, `cannot read the cache at ${cacheDir} as uid 65534: the directory belongs to uid 0 with mode 0700 (a cache is root-only by design); run the command as root`)
    t.notMatch(r.stderr, /EPERM|chmod|scandir/)
  }

  // An operator let users read it: both commands work, and no mode changes.
  execFileSync('chmod', ['-R', 'a+rX', cacheDir])
  const before = statSync(cacheDir).mode
  const ls = run(['cache', 'ls', '--cache', cacheDir, '--json'])
  t.equal(ls.status, 0, ls.stderr)
  t.match(JSON.parse(ls.stdout), { objects: [{ sha256: m.sha256, names: ['doc'] }] })
  const v = run(['verify', '--cache', cacheDir])
  t.equal(v.status, 0, v.stderr)
  t.match(v.stdout, /1 ok, 0 corrupt/)
  t.equal(statSync(cacheDir).mode, before, 'no chmod of the cache')
})
