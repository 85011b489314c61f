/**
 * Dependencies the bundled CLI loads on demand (scripts/bundle-lib.mjs splits
 * them into chunks), exercised through the bundle itself: a chunk of a
 * CommonJS package exports only `default`, which unbundled tests (Node's own
 * CommonJS named exports) cannot show. systeminformation is loaded this way
 * for the node id's MAC fallback and for the daemon's heartbeat; pino as
 * chunks/pino.cjs, required at a logger's first line (agent/core/log.ts).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { bundleAgent } from '../helpers/bundle.js'
import { CHUNK_DIR, PINO_FILE } from '../../scripts/bundle-lib.mjs'
import { gate } from '../helpers/capability.js'

const run = (args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

// One bundle for the whole file, removed at the end.
const bundleDir = mkdtempSync(join(tmpdir(), 'ba-lazy-imports-'))
t.teardown(() => rmSync(bundleDir, { recursive: true, force: true }))
let cli: Promise<string> | undefined
const bundled = (): Promise<string> => (cli ??= bundleAgent(bundleDir))

t.test('boot without rd.bootagent.node or a DMI UUID asks systeminformation for a MAC', async (t) => {
  const agent = await bundled()
  const dir = t.testdir()
  const head = createServer((req, res) => {
    req.resume()
    res.statusCode = 404
    res.end()
  })
  await new Promise<void>((resolve) => head.listen(0, '127.0.0.1', resolve))
  t.teardown(() => head.close())
  const cmdline = join(dir, 'cmdline')
  await writeFile(cmdline, `rd.bootagent.server=http://127.0.0.1:${(head.address() as AddressInfo).port} rd.bootagent.onfail=emergency\n`)
  const r = await run([agent, 'boot', '--cmdline-file', cmdline, '--run-dir', join(dir, 'run'), '--sysroot', join(dir, 'sysroot'), '--json'], {
    BOOT_AGENT_DMI_PRODUCT_UUID: join(dir, 'no-such-file'),
  })
  const record = JSON.parse(r.stdout) as { node: string; error?: { code: string; message: string } }
  t.notMatch(record.error?.message ?? '', /is not a function/, 'systeminformation was callable')
  if (/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(record.node)) {
    t.equal(record.error?.code, 'EHTTP', 'the node id came from a MAC; the stage went on to ask the head node')
  } else {
    // A host without a physical interface: the documented configuration error, not a crash.
    t.equal(record.error?.code, 'ECONFIG')
  }
})

t.test("the daemon's heartbeat collects hardware facts through systeminformation", gate('kmsg'), async (t) => {
  const agent = await bundled()
  const state = join(t.testdir(), 'state')
  const r = await run([agent, 'daemon', '--once', '--node', 'n1', '--state-dir', state, '--boot-record', join(state, 'none.json'), '--no-metrics'], {})
  t.equal(r.code, 0, r.stderr)
  t.notMatch(r.stderr, /heartbeat failed/)
  const hb = JSON.parse(await readFile(join(state, 'heartbeat.json'), 'utf8')) as { data: { cpus?: { brand?: string }; probeErrors?: string[] } }
  t.notMatch(JSON.stringify(hb.data.probeErrors ?? []), /is not a function/)
  t.type(hb.data.cpus?.brand, 'string', 'cpu facts from systeminformation')
})

t.test('pino is chunks/pino.cjs in the bundle, loaded at the first line logged and not before', async (t) => {
  const agent = await bundled()
  const dir = t.testdir()
  const cache = join(dir, 'cache')
  // The bundle sits in a temporary directory: no node_modules above it to fall back on.
  const logged = await run([agent, 'fetch', 'http://127.0.0.1:9/m.json', '--cache', cache], { BOOT_AGENT_LOG_LEVEL: 'info' })
  t.equal(logged.code, 1)
  const first = JSON.parse(logged.stderr.split('\n')[0]!) as Record<string, unknown>
  t.match(first, { level: 'info', msg: '[started] fetch-manifest' }, 'a JSON line from pino, loaded from the bundle')
  // The same bundle without pino.cjs: a command that logs nothing never asks for it.
  const copy = join(dir, 'bundle')
  await cp(dirname(agent), copy, { recursive: true })
  await rm(join(copy, CHUNK_DIR, PINO_FILE))
  await mkdir(cache, { recursive: true }) // an empty directory is an empty cache (the failed fetch made none)
  const silent = await run([join(copy, basename(agent)), 'verify', '--cache', cache], { BOOT_AGENT_LOG_LEVEL: 'info' })
  t.equal(silent.code, 0, silent.stderr)
  t.match(silent.stdout, /0 ok, 0 corrupt, 0 problem/)
  const needs = await run([join(copy, basename(agent)), 'fetch', 'http://127.0.0.1:9/m.json', '--cache', cache], { BOOT_AGENT_LOG_LEVEL: 'info' })
  t.equal(needs.code, 1)
  t.match(needs.stderr, `the agent's bundle lacks ${join(copy, CHUNK_DIR, PINO_FILE)}, which its logging loads`, 'the first line is what loads it')
})
