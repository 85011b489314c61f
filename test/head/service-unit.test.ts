/**
 * systemd/boot-agent-head.service: verified by the real systemd-analyze, its
 * ExecStart run for real (the bundled CLI, with the unit's variables filled
 * in from systemd/boot-agent-head.env pointed at a test store) so that the
 * options the unit passes are ones `boot-agent head` takes, and a comment on
 * every group of directives.
 */
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { inCI } from '../helpers/capability.js'
import { analyzeVerify, uncommentedDirectives } from '../helpers/unit-file.js'
import { BUNDLE, runCli } from '../helpers/run-cli.js'

const UNIT = join(import.meta.dirname, '../../systemd/boot-agent-head.service')
const ENV = join(import.meta.dirname, '../../systemd/boot-agent-head.env')

const hasAnalyze = ((): boolean => {
  try {
    execFileSync('sh', ['-c', 'command -v systemd-analyze'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()
// Under CI a missing systemd-analyze fails (scripts/ensure-packages.sh installs systemd).
const analyzeGate = { skip: hasAnalyze || inCI() ? false : 'needs systemd-analyze (Debian package systemd)' }

const directives = async (): Promise<string[]> =>
  (await readFile(UNIT, 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))

t.test('systemd-analyze verify finds nothing wrong with the unit', analyzeGate, async (t) => {
  if (!hasAnalyze) return t.fail('systemd-analyze is missing under CI=true')
  const out = await analyzeVerify(await readFile(UNIT, 'utf8'), '/usr/bin/boot-agent', t.testdir(), 'boot-agent-head.service').catch((e: Error) => {
    t.fail(e.message)
    return ''
  })
  t.equal(out.trim(), '', 'no warnings')
})

t.test('the unit runs `boot-agent head` from an environment file, restarts on failure, and is hardened', async (t) => {
  const active = await directives()
  t.ok(active.some((l) => l.startsWith('ExecStart=/usr/bin/boot-agent head ')))
  t.ok(active.some((l) => l.startsWith('EnvironmentFile=-/etc/default/boot-agent-head')))
  t.ok(active.includes('Restart=on-failure'))
  t.ok(active.includes('ExecReload=/bin/kill -HUP $MAINPID'), 'reload = SIGHUP (nodes file, certificate)')
  for (const h of ['ProtectSystem=strict', 'NoNewPrivileges=yes', 'DynamicUser=yes', 'CapabilityBoundingSet=']) t.ok(active.includes(h), h)
  t.notOk(active.some((l) => l.startsWith('MemoryDenyWriteExecute=')), 'W^X stays off (V8 JIT)')
})

t.test('every group of directives has a comment saying why', async (t) => {
  t.same(uncommentedDirectives(await readFile(UNIT, 'utf8')), [], 'no directive without a comment above its group')
})

/** systemd's expansion of ExecStart: `${VAR}` one argument, `$VAR` split on whitespace. */
const expand = (line: string, env: Record<string, string>): string[] =>
  line.split(/\s+/).flatMap((w) => {
    const one = /^\$\{(\w+)\}$/.exec(w)
    if (one) return [env[one[1]!] ?? '']
    const split = /^\$(\w+)$/.exec(w)
    if (split) return (env[split[1]!] ?? '').split(/\s+/).filter(Boolean)
    return [w]
  })

t.test("the unit's ExecStart, with the env file's variables, starts the head (events dir from the unit)", async (t) => {
  const dir = t.testdir({ store: {} })
  const env: Record<string, string> = {}
  for (const l of (await readFile(ENV, 'utf8')).split('\n')) {
    const m = /^(\w+)=(.*)$/.exec(l)
    if (m) env[m[1]!] = m[2]!
  }
  t.match(env, { BOOT_AGENT_HEAD_STORE: String, BOOT_AGENT_HEAD_NODES: String, BOOT_AGENT_HEAD_LISTEN: String }, 'the env file sets every variable the unit uses')
  Object.assign(env, { BOOT_AGENT_HEAD_STORE: join(dir, 'store'), BOOT_AGENT_HEAD_NODES: join(dir, 'nodes.json'), BOOT_AGENT_HEAD_LISTEN: '127.0.0.1:0' })
  await writeFile(env.BOOT_AGENT_HEAD_NODES!, JSON.stringify({ schema: 1, nodes: { n1: {} } }))
  const exec = (await directives()).find((l) => l.startsWith('ExecStart='))!.slice('ExecStart='.length)
  const argv = expand(exec, env).slice(1).map((a) => (a === '/var/lib/boot-agent-head/events' ? join(dir, 'events') : a))
  await mkdir(join(dir, 'events'))
  t.ok(runCli(['head', '--help']).stdout.includes('--tls-cert FILE'), 'TLS is an option the unit can pass')
  const child = spawn(process.execPath, [BUNDLE, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn' } })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    let err = ''
    const timer = setTimeout(() => reject(new Error(`no URL within 15 s: ${err}`)), 15_000)
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (out.includes('\n')) {
        clearTimeout(timer)
        resolve(out.split('\n')[0]!)
      }
    })
    child.once('exit', (c) => reject(new Error(`exited ${c}: ${err}`)))
  })
  const { url } = JSON.parse(line) as { url: string }
  t.equal((await fetch(`${url}/v1/nodes`)).status, 200)
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM (systemctl stop) is a clean stop, not a failure to restart')
})
