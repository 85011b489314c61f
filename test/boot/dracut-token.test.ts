/**
 * dracut/50boot-agent/module-setup.sh carries the node's token file into the
 * initramfs (docs/security.md): install() is run by real bash with dracut's
 * install helpers replaced by stand-ins that copy into a directory (dracut
 * itself and a whole initramfs build are what the VM tests run; this checks
 * the module's own decision quickly). A readable token file stops the build.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const MODULE = join(import.meta.dirname, '..', '..', 'dracut', '50boot-agent', 'module-setup.sh')
const TOKEN = 'dracut-9f8e7d6c5b4a39281706f5e4d3c2b1a0'

/** Stand-ins for dracut's helpers: copy like inst_simple does, record the rest. */
const STUBS = `
derror() { echo "derror: $*" >&2; }
inst_simple() { mkdir -p "$initdir$(dirname "$2")" && cp "$1" "$initdir$2"; }
inst_binary() { :; }
inst_multiple() { :; }
inst_hook() { :; }
dracut_module_included() { return 1; }
strip() { :; }
`

const runInstall = async (dir: string, tokenPath: string): Promise<{ rc: number; stderr: string; initdir: string }> => {
  const initdir = join(dir, 'initramfs')
  await mkdir(initdir, { recursive: true })
  const bundle = join(dir, 'boot-agent.mjs')
  await writeFile(bundle, '// bundle\n')
  const script = `${STUBS}\n. "$MODULE"\ninstall`
  try {
    const { stderr } = await promisify(execFile)('bash', ['-c', script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', MODULE, initdir, moddir: join(dir, 'moddir'), BOOT_AGENT_BUNDLE: bundle, BOOT_AGENT_NODE: '/bin/true', BOOT_AGENT_TOKEN: tokenPath, DRACUT_TMPDIR: dir },
    })
    return { rc: 0, stderr, initdir }
  } catch (e) {
    const err = e as { code?: number; stderr?: string }
    return { rc: err.code ?? -1, stderr: err.stderr ?? '', initdir }
  }
}

t.test('a root-only token file is installed as /etc/boot-agent/token, mode 0600', async (t) => {
  const dir = t.testdir()
  const token = join(dir, 'token')
  await writeFile(token, `${TOKEN}\n`, { mode: 0o600 })
  const r = await runInstall(dir, token)
  t.equal(r.rc, 0, r.stderr)
  const installed = join(r.initdir, 'etc', 'boot-agent', 'token')
  t.equal(await readFile(installed, 'utf8'), `${TOKEN}\n`)
  t.equal(((await stat(installed)).mode & 0o777).toString(8), '600')
})

t.test('a group- or world-readable token file stops the build, naming the path and the fix, never the token', async (t) => {
  const dir = t.testdir()
  const token = join(dir, 'token')
  await writeFile(token, `${TOKEN}\n`, { mode: 0o644 })
  const r = await runInstall(dir, token)
  t.not(r.rc, 0)
  t.match(r.stderr, new RegExp(`${token} is mode 644.*chmod 600 ${token}`))
  t.notOk(r.stderr.includes(TOKEN))
  t.notOk(existsSync(join(r.initdir, 'etc', 'boot-agent', 'token')), 'nothing installed')
})

t.test('no token file: nothing installed, the build goes on', async (t) => {
  const dir = t.testdir()
  const r = await runInstall(dir, join(dir, 'absent'))
  t.equal(r.rc, 0, r.stderr)
  t.notOk(existsSync(join(r.initdir, 'etc', 'boot-agent', 'token')))
})
