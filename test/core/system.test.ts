import t from 'tap'
import { spawn } from 'node:child_process'
import { commands, system } from '../../agent/core/system.js'

type Tables = { system: Record<string, string>; commands: Record<string, string> }

/** This process's environment without any BOOT_AGENT_* override (an empty one would still override). */
const plainEnv = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BOOT_AGENT_')))

/** The system and commands tables as a fresh process with `env` (added to {@link plainEnv}) sees them: they are read once, at import. */
const tablesWith = (env: Record<string, string>): Promise<Tables> =>
  new Promise((resolve, reject) => {
    const src = `import(${JSON.stringify(new URL('../../agent/core/system.ts', import.meta.url).href)}).then((m) => process.stdout.write(JSON.stringify({ system: m.system, commands: m.commands })))`
    const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', src], { env: { ...plainEnv(), ...env } })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${err}`))))
  })

t.test('every path and command is overridable by BOOT_AGENT_<NAME>, and only that one changes', async (t) => {
  const base = await tablesWith({})
  const moved = await tablesWith({ BOOT_AGENT_RUN_DIR: '/tmp/test-run', BOOT_AGENT_STATE_DIR: '/tmp/test-state', BOOT_AGENT_CMD_MOUNT: '/opt/fake-mount', BOOT_AGENT_DEV_KMSG: '/tmp/kmsg' })
  t.same(moved.system, { ...base.system, runDir: '/tmp/test-run', stateDir: '/tmp/test-state', devKmsg: '/tmp/kmsg' })
  t.same(moved.commands, { ...base.commands, mount: '/opt/fake-mount' })
})

t.test('without overrides the real system paths and plain command names are used', async (t) => {
  const tables = await tablesWith({})
  t.match(tables.system, { procCmdline: '/proc/cmdline', runDir: '/run/boot-agent', stateDir: '/var/lib/boot-agent', devKmsg: '/dev/kmsg', sysroot: '/sysroot', bootId: '/proc/sys/kernel/random/boot_id' })
  t.match(tables.commands, { mount: 'mount', losetup: 'losetup', unsquashfs: 'unsquashfs', reboot: 'reboot' })
  for (const v of Object.values(tables.system)) t.match(v, /^\//, `${v} is absolute`)
})

t.test('the tables in this process are frozen at import: changing the environment later changes nothing', async (t) => {
  const before = system.runDir
  const had = process.env.BOOT_AGENT_RUN_DIR
  process.env.BOOT_AGENT_RUN_DIR = '/tmp/changed-later'
  t.teardown(() => {
    if (had === undefined) delete process.env.BOOT_AGENT_RUN_DIR
    else process.env.BOOT_AGENT_RUN_DIR = had
  })
  t.equal(system.runDir, before)
  t.equal(typeof commands.mount, 'string')
})
