/**
 * `boot-agent boot` as the dracut hook runs it: the bundled file, a fresh
 * process, the exit code and what an operator reads on the console.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

const AGENT = join(process.cwd(), 'dist', 'boot-agent.mjs')
const bundled = { skip: existsSync(AGENT) ? false : 'needs the bundle (node scripts/bundle.mjs; npm test builds it)' }

const boot = async (dir: string, cmdline: string, extra: string[] = []) => {
  const f = join(dir, `cmdline-${Math.random().toString(36).slice(2)}`)
  await writeFile(f, cmdline)
  const r = spawnSync('node', [AGENT, 'boot', '--cmdline-file', f, '--run-dir', join(dir, 'run'), '--sysroot', join(dir, 'sysroot'), ...extra], {
    encoding: 'utf8',
    env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'silent' },
    timeout: 60_000,
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

t.test('a bad value exits 2 with a message naming the key', bundled, async (t) => {
  const dir = t.testdir()
  for (const [line, key] of [
    ['rd.bootagent.server=ftp://head/', 'rd.bootagent.server'],
    ['rd.bootagent.server=http://h rd.bootagent.root=sda2', 'rd.bootagent.root'],
    ['rd.bootagent.server=http://h rd.bootagent.cache=LABEL=', 'rd.bootagent.cache'],
    ['rd.bootagent.server=http://h rd.bootagent.onfail=explode', 'rd.bootagent.onfail'],
  ] as const) {
    const r = await boot(dir, line)
    t.equal(r.code, 2, line)
    t.match(r.stderr, new RegExp(`boot-agent boot: ${key.replace(/\./g, '\\.')}:`), `names ${key}`)
  }
})

t.test('an unknown key is warned about once, by name', bundled, async (t) => {
  const dir = t.testdir()
  // No server answers on port 1: the boot then fails, which is not what this test is about.
  const r = await boot(dir, 'rd.bootagent.server=http://127.0.0.1:1 rd.bootagent.node=n1 rd.bootagent.timeout=1 rd.bootagent.stlye=rwram rd.bootagent.stlye=x')
  t.equal(r.stderr.split('\n').filter((l) => l.includes('unknown key rd.bootagent.stlye')).length, 1)
})

t.test('a missing server is a configuration error naming rd.bootagent.server, with a record written', bundled, async (t) => {
  const dir = t.testdir()
  const r = await boot(dir, 'rd.bootagent.node=n1', ['--json'])
  t.equal(r.code, 2)
  t.match(JSON.parse(r.stdout), { result: 'failed', error: { code: 'ECONFIG', message: /rd\.bootagent\.server/ } })
})

t.test('--help answers without doing anything', bundled, async (t) => {
  const r = spawnSync('node', [AGENT, 'boot', '--help'], { encoding: 'utf8' })
  t.equal(r.status, 0)
  t.match(r.stdout, /--cmdline-file FILE/)
  t.match(r.stdout, /exit codes: 0 root ready/)
})
