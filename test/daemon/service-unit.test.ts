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
import { analyzeVerify, uncommentedDirectives } from '../helpers/unit-file.js'

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
  const out = await analyzeVerify(await readFile(UNIT, 'utf8'), '/usr/bin/boot-agent daemon', t.testdir(), 'boot-agent.service').catch((e: Error) => {
    t.fail(e.message)
    return ''
  })
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
  t.same(uncommentedDirectives(await readFile(UNIT, 'utf8')), [], 'no directive without a comment above its group')
})

t.test('the unit waits for READY=1 from a child (systemd-notify), has a watchdog, and scores 2.4 or better', async (t) => {
  const active = (await readFile(UNIT, 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
  for (const d of ['Type=notify', 'NotifyAccess=all', 'WatchdogSec=60s', 'DevicePolicy=closed', 'DeviceAllow=/dev/kmsg r']) t.ok(active.includes(d), d)
  if (!which('systemd-analyze')) return
  const r = spawnSync('systemd-analyze', ['security', '--offline=true', UNIT], { encoding: 'utf8' })
  const score = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1]
  t.ok(score !== undefined && Number(score) <= 2.4, `systemd-analyze security: ${score} (README records 2.4)`)
})
