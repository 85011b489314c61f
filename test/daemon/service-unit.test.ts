/**
 * systemd/boot-agent.service: verified by the real systemd-analyze when this
 * machine has it, and checked for what the daemon needs (/dev/kmsg, W^X off)
 * and for a comment on every group of directives.
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'

const UNIT = join(import.meta.dirname, '../../systemd/boot-agent.service')
const which = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

t.test('systemd-analyze verify finds nothing wrong with the unit', { skip: which('systemd-analyze') ? false : 'needs systemd-analyze (systemd)' }, async (t) => {
  // ExecStart points at the installed /usr/bin/boot-agent; verify insists the
  // binary exists, so the copy checked here runs /bin/true instead — the only change.
  const text = await readFile(UNIT, 'utf8')
  const dir = t.testdir()
  const copy = join(dir, 'boot-agent.service')
  await writeFile(copy, text.replace('ExecStart=/usr/bin/boot-agent daemon', `ExecStart=${existsSync('/bin/true') ? '/bin/true' : '/usr/bin/true'}`))
  let out = ''
  try {
    out = execFileSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string }
    t.fail(`systemd-analyze verify failed: ${err.stderr ?? ''}${err.stdout ?? ''}`)
  }
  t.equal(out.trim(), '', 'no warnings')
})

t.test('the unit keeps /dev/kmsg readable and W^X off, and restarts on failure', async (t) => {
  const lines = (await readFile(UNIT, 'utf8')).split('\n').map((l) => l.trim())
  const active = lines.filter((l) => l && !l.startsWith('#'))
  for (const forbidden of ['ProtectKernelLogs=', 'PrivateDevices=', 'MemoryDenyWriteExecute=']) {
    t.notOk(active.some((l) => l.startsWith(forbidden)), `${forbidden} is not set`)
    t.ok(lines.some((l) => l.startsWith('#') && l.includes(forbidden.slice(0, -1))), `why ${forbidden} is off is written down`)
  }
  t.ok(active.includes('Restart=on-failure'))
  t.ok(active.includes('ExecStart=/usr/bin/boot-agent daemon'))
  t.ok(active.some((l) => l.startsWith('ProtectSystem=')), 'hardening is on')
})

t.test('every group of directives has a comment saying why', async (t) => {
  const lines = (await readFile(UNIT, 'utf8')).split('\n').map((l) => l.trim())
  const bare: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!
    if (!l || l.startsWith('#') || l.startsWith('[')) continue
    // Walk up through the directive group to its head; the line above it must be a comment.
    let j = i - 1
    while (j >= 0 && lines[j] && !lines[j]!.startsWith('#') && !lines[j]!.startsWith('[')) j--
    if (!(j >= 0 && lines[j]!.startsWith('#')) && !/^(Description|Documentation)=/.test(l)) bare.push(l)
  }
  t.same(bare, [], 'no directive without a comment above its group')
})

t.test('the unit waits for READY=1 from a child (systemd-notify), has a watchdog, and scores 2.4 or better', async (t) => {
  const active = (await readFile(UNIT, 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
  for (const d of ['Type=notify', 'NotifyAccess=all', 'WatchdogSec=60s', 'DevicePolicy=closed', 'DeviceAllow=/dev/kmsg r']) t.ok(active.includes(d), d)
  if (!which('systemd-analyze')) return
  const r = spawnSync('systemd-analyze', ['security', '--offline=true', UNIT], { encoding: 'utf8' })
  const score = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1]
  t.ok(score !== undefined && Number(score) <= 2.4, `systemd-analyze security: ${score} (README records 2.4)`)
})
