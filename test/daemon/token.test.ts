/**
 * The daemon authenticates to a head that requires it (docs/security.md):
 * the bundled `boot-agent daemon --once`, as systemd runs it, against the
 * real head started with a site token and node n1 bound to its own
 * credential. By default it uses the copy the boot stage left in the run
 * directory (/run/boot-agent/token); a readable --token-file is refused.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { gate } from '../helpers/capability.js'
import { writeNodes } from '../helpers/head-fixtures.js'
import { BUNDLE, runCli } from '../helpers/run-cli.js'

const SITE = 'site-0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a'
const TOKEN_N1 = 'n1-daemon-7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b'
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')

/** The daemon, once, as a child (the head answers in this process meanwhile). */
const daemon = (args: string[], env: Record<string, string>): Promise<{ code: number; stderr: string }> =>
  new Promise((resolve) => {
    execFile(process.execPath, [BUNDLE, 'daemon', '--once', ...args], { env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn', ...env }, timeout: 60_000 }, (err, _out, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr }),
    )
  })

const setup = async (t: Test) => {
  if (!runCli(['--help']).stdout) t.fail('the bundle does not run')
  const dir = t.testdir()
  const store = join(dir, 'store')
  const nodes = await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'os' }, nodes: { n1: { tokenSha256: sha256(TOKEN_N1) } } })
  const head = await startHead({ store, nodes, token: SITE })
  t.teardown(() => head.close({ abort: true }))
  const runDir = join(dir, 'run')
  await mkdir(runDir)
  const env = { BOOT_AGENT_RUN_DIR: runDir, BOOT_AGENT_TOKEN_FILE: join(dir, 'no-token') }
  const args = ['--node', 'n1', '--server', head.url, '--state-dir', join(dir, 'state'), '--boot-record', join(dir, 'none.json')]
  const stored = (): number => {
    try {
      return readFileSync(join(store, 'events', 'n1.jsonl'), 'utf8').split('\n').filter(Boolean).length
    } catch {
      return 0
    }
  }
  return { dir, runDir, stored, daemon: (extra: string[] = []) => daemon([...args, ...extra], env) }
}

t.test('with the boot stage\'s token copy the daemon delivers to a head that requires it; a readable token file is refused by name', gate('kmsg'), async (t) => {
  const s = await setup(t)
  // (Without a token the head answers 401: test/boot/node-token.test.ts and test/head/node-identity.test.ts.)
  await writeFile(join(s.runDir, 'token'), `${TOKEN_N1}\n`, { mode: 0o600 })
  const ok = await s.daemon()
  t.equal(ok.code, 0, ok.stderr)
  t.ok(s.stored() > 0, 'events stored for n1')
  t.notOk(ok.stderr.includes(TOKEN_N1))
  const readable = join(s.dir, 'readable-token')
  await writeFile(readable, `${TOKEN_N1}\n`, { mode: 0o644 })
  const refused = await s.daemon(['--token-file', readable])
  t.equal(refused.code, 2, 'a configuration error')
  t.match(refused.stderr, new RegExp(`${readable} is mode 0644.*chmod 600 ${readable}`))
  t.notOk(refused.stderr.includes(TOKEN_N1))
})
