/**
 * `boot-agent status` through the bundled CLI, from state files written by
 * the daemon's own writers (no kernel log needed), beyond what
 * test/daemon/status.test.ts checks: --cache-dir, a boot record that is not
 * JSON, and the kmsg/heartbeat lines from the state dir.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { writeHeartbeat, writePosition } from '../../agent/daemon/state.js'
import { publishBytes } from '../helpers/cache.js'
import { runCli } from '../helpers/run-cli.js'

const A = 'a'.repeat(64)

t.test('status reports the caches named and the one in the boot record once each, with the state dir\'s position and heartbeat', async (t) => {
  const root = t.testdir()
  const cacheA = join(root, 'cache-a')
  const cacheB = join(root, 'cache-b')
  await publishBytes(await Cache.open(cacheA), randomBytes(4000))
  await Cache.open(cacheB)
  const record = join(root, 'boot-record.json')
  await writeFile(record, JSON.stringify({ node: 'n7', server: 'http://head', style: 'disked', result: 'ok', image: { name: 'CPE-base', sha256: A }, cache: { mountpoint: cacheA, hit: true }, fallbacks: [] }))
  const stateDir = join(root, 'state')
  await writePosition(stateDir, { bootId: '0123456789abcdef', seq: 17, lost: 2, time: '2026-01-01T00:00:00.000Z' })
  await writeHeartbeat(stateDir, { time: '2026-01-01T00:05:00.000Z', eventId: 'e1', data: {} })
  const args = ['--boot-record', record, '--state-dir', stateDir, '--cache-dir', cacheA, '--cache-dir', cacheB]
  const json = runCli(['status', '--json', ...args])
  t.equal(json.status, 0, json.stderr)
  const s = JSON.parse(json.stdout) as { caches: { dir: string; objects: number; bytes: number }[]; kmsg: unknown; lastHeartbeat: unknown; bootRecord: unknown }
  t.same(s.caches.map((c) => [c.dir, c.objects, c.bytes]), [[cacheA, 1, 4000], [cacheB, 0, 0]], 'the record\'s cache is not listed twice')
  t.match(s, { kmsg: { seq: 17, lost: 2 }, lastHeartbeat: { time: '2026-01-01T00:05:00.000Z', eventId: 'e1' }, bootRecord: { node: 'n7', image: { sha256: A } } })
  const text = runCli(['status', ...args])
  t.equal(text.status, 0)
  t.match(text.stdout, /node:\s+n7\s+server: http:\/\/head/)
  t.match(text.stdout, /boot:\s+ok, style disked, cache hit/)
  t.match(text.stdout, /kmsg:\s+seq 17 \(boot 01234567\), 2 record\(s\) lost/)
  t.match(text.stdout, /heartbeat: 2026-01-01T00:05:00.000Z/)
})

t.test('a boot record that is not JSON is reported, and status still answers', async (t) => {
  const root = t.testdir({ 'boot-record.json': '{ torn' })
  const r = runCli(['status', '--boot-record', join(root, 'boot-record.json'), '--state-dir', join(root, 'state')])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, new RegExp(`boot:\\s+no boot record at ${join(root, 'boot-record.json')} \\(.+\\)`))
})

// --state-dir naming a file was EUNEXPECTED "ENOTDIR: scandir", exit 1; a mistyped --cache-dir was
// reported as an empty cache on a file system "? free of ?".
t.test('a --state-dir that is a file and a --cache-dir that is missing or a file are usage errors naming the flag', async (t) => {
  const dir = t.testdir({ file: 'x' })
  for (const [flag, path, why] of [['--state-dir', join(dir, 'file'), 'is not a directory'], ['--cache-dir', join(dir, 'missing'), 'does not exist'], ['--cache-dir', join(dir, 'file'), 'is not a directory']] as const) {
    const r = runCli(['status', '--boot-record', join(dir, 'none.json'), '--state-dir', join(dir, 'state'), flag, path])
    t.equal(r.status, 2, `${flag} ${path}: exit 2`)
    t.match(r.stderr, `${flag}: ${path} ${why}`)
  }
})
