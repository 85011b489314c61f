/**
 * What a new user hit on main (issue #21, "Tried as a new user would"), each
 * as they hit it: the bundled CLI in its own process against a real head
 * node (startHead, in this process) or no head at all.
 */
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { execFileSync } from 'node:child_process'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { imageBytes } from '../helpers/head-fixtures.js'
import { runCli, runCliAsync } from '../helpers/run-cli.js'
import { freePort } from '../helpers/nginx.js'

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffd]/

t.test('an unknown option is named, not explained as a positional argument', async (t) => {
  const r = runCli(['fetch', '--bogus', 'http://x/m', '--cache', '/nonexistent'])
  t.equal(r.status, 2)
  t.match(r.stderr, /unknown option --bogus; options: .*--cache/)
  t.notMatch(r.stderr, /positional/)
})

t.test('--help mentions --version', async (t) => {
  const r = runCli(['--help'])
  t.match(r.stdout, /--version/)
  t.match(runCli(['--version']).stdout, /^\d+\.\d+\.\d+/)
})

t.test('manifest --check given an image refuses it plainly, with no binary bytes in the message', async (t) => {
  const dir = t.testdir()
  const img = join(dir, 'image.sqfs')
  await writeFile(img, Buffer.concat([Buffer.from('hsqs'), imageBytes(8192, 5)]))
  const r = runCli(['manifest', '--check', img])
  t.equal(r.status, 1)
  t.match(r.stderr, /is not a manifest: it is a squashfs image \(starts with "hsqs"\), not JSON text; give the manifest/)
  t.notOk(CONTROL.test(r.stderr), 'nothing unprintable on the terminal')
})

t.test('a head that is not running: a prompt, bounded answer naming what to check, retries logged at info', async (t) => {
  const port = await freePort()
  const dir = t.testdir()
  const started = performance.now()
  const r = await runCliAsync(['fetch', `http://127.0.0.1:${port}/v1/images/doc/manifest`, '--cache', join(dir, 'cache')], { env: { BOOT_AGENT_LOG_LEVEL: 'info' } })
  const ms = Math.round(performance.now() - started)
  t.equal(r.status, 1)
  t.match(r.stderr, new RegExp(`boot-agent fetch: http://127\\.0\\.0\\.1:${port}/v1/images/doc/manifest: connect ECONNREFUSED .*is the head node \\(or mirror\\) running at 127\\.0\\.0\\.1:${port}, and is the port right\\?`))
  const retries = r.stderr.split('\n').filter((l) => l.includes('"level":"info"') && /manifest fetch failed \(.*ECONNREFUSED.*\); retrying in \d+\.\d s \(attempt \d of 4\)/.test(l))
  t.equal(retries.length, 3, `each retry said once at info (${ms} ms in all)`)
})

t.test('fetch --json on failure prints {error: {code, message}} and exits non-zero; a 404 keeps the head\'s words', async (t) => {
  const dir = t.testdir()
  const head = await startHead({ store: join(dir, 'store'), nodes: { schema: 1, defaults: {}, architectures: {}, groups: {}, nodes: {}, images: {} } })
  t.teardown(() => head.close())
  const url = `${head.url}/v1/images/doc/manifest`
  const j = await runCliAsync(['fetch', url, '--cache', join(dir, 'cache'), '--json'])
  t.equal(j.status, 1)
  t.match(JSON.parse(j.stdout), { error: { code: 'EHTTP', message: `HTTP 404 from ${url}: no manifest for image doc` } })
  const plain = await runCliAsync(['fetch', url, '--cache', join(dir, 'cache')])
  t.equal(plain.status, 1)
  t.match(plain.stderr, `boot-agent fetch: HTTP 404 from ${url}: no manifest for image doc`)
  const usage = await runCliAsync(['fetch', '--json', '--cache', join(dir, 'cache')])
  t.equal(usage.status, 2, 'a usage error is exit 2, in JSON too')
  t.match(JSON.parse(usage.stdout), { error: { code: 'ECONFIG' } })
})

// publish of a directory was EUNEXPECTED "EISDIR: illegal operation on a directory, read" naming no path;
// of a missing file exit 1; of a FIFO (or manifest of one) it waited forever for a writer.
t.test('publish and manifest refuse a missing image, a directory and a FIFO at once: exit 2 naming IMAGE and the path', async (t) => {
  const dir = t.testdir()
  const fifo = join(dir, 'fifo.sqfs')
  execFileSync('mkfifo', [fifo])
  for (const [path, why] of [[dir, 'is not a regular file'], [join(dir, 'missing.sqfs'), 'does not exist'], [fifo, 'is not a regular file']] as const) {
    const p = await runCliAsync(['publish', path, '--name', 'x', '--store', join(dir, 'store')], { timeoutMs: 20_000 })
    t.equal(p.status, 2, `publish ${path}: exit 2`)
    t.match(p.stderr, `IMAGE: ${path} ${why}`)
  }
  const m = await runCliAsync(['manifest', fifo], { timeoutMs: 20_000 })
  t.equal(m.status, 2, 'manifest of a FIFO: exit 2')
  t.match(m.stderr, `${fifo} is not a regular file`)
})

// --metrics-interval 0 silently became 1 s; an interval past Node's longest timer (~24.8 days)
// overflowed setInterval to 1 ms: the metrics file rewritten (or a heartbeat sent) every millisecond.
t.test('daemon intervals of 0 metrics seconds or past the longest timer are usage errors naming the flag', async (t) => {
  const dir = t.testdir()
  const base = ['daemon', '--once', '--node', 'n1', '--state-dir', join(dir, 'state'), '--boot-record', join(dir, 'none.json'), '--no-self-check']
  for (const [flag, value] of [['--metrics-interval', '0'], ['--metrics-interval', '3000000'], ['--heartbeat-interval', '3000000']] as const) {
    const r = runCli([...base, '--metrics-file', join(dir, 'm.prom'), flag, value])
    t.equal(r.status, 2, `${flag} ${value}: exit 2`)
    t.match(r.stderr, new RegExp(`${flag}: .*${value}`))
  }
})

// --slurm drain with no scontrol said nothing at start: the node could never drain itself, and the
// first sign was a failed drain after the first trouble.
t.test('daemon --slurm drain without scontrol warns at start, naming what is missing and what to do', async (t) => {
  const dir = t.testdir()
  const r = runCli(['daemon', '--once', '--node', 'n1', '--state-dir', join(dir, 'state'), '--boot-record', join(dir, 'none.json'), '--no-self-check', '--no-metrics', '--slurm', 'drain', '--slurm-dry-run'],
    { env: { BOOT_AGENT_CMD_SCONTROL: join(dir, 'no-such-scontrol') } })
  t.match(r.stderr, /slurm: scontrol \(.*no-such-scontrol\) is not installed or not executable: this node cannot drain itself; install Slurm's client \(Debian: slurm-client\) or set BOOT_AGENT_CMD_SCONTROL/)
})

// `boot-agent --log-format` (value forgotten) printed the general usage, saying nothing of what was wrong;
// a bad value before an unknown command was not named at all.
t.test('--log-format without a value or with a bad one is named, with the formats it takes', async (t) => {
  for (const args of [['--log-format'], ['status', '--log-format'], ['--log-format', 'bogus', 'version'], ['--log-format=']]) {
    const r = runCli(args)
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, /^boot-agent: --log-format: (needs a value|"bogus" is not one of them); give journal, text or json/m, args.join(' '))
  }
})

// A head redirecting to a mirror that is down: the error said "nothing is listening at" the head's
// address, which was listening (it answered the redirect), and named neither the mirror nor the redirect.
t.test('a redirect to a port where nothing listens names that address, not the one that redirected', async (t) => {
  const dead = await freePort()
  const server = createServer((_req, res) => { res.writeHead(302, { location: `http://127.0.0.1:${dead}/m` }); res.end() })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  const r = await runCliAsync(['fetch', `http://127.0.0.1:${port}/m`, '--cache', join(t.testdir(), 'cache')], { timeoutMs: 60_000 })
  t.equal(r.status, 1)
  t.match(r.stderr, `nothing is listening at 127.0.0.1:${dead} (reached from 127.0.0.1:${port}, by a redirect)`)
  t.notMatch(r.stderr, `nothing is listening at 127.0.0.1:${port}`)
})
