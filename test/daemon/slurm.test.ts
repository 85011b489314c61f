/**
 * The Slurm guard's effects with a scripted scontrol (the real one is in
 * slurm-real.test.ts): failures are retried a bounded number of times, then
 * logged and counted, and never stop anything; dry run runs no update.
 */
import t, { type Test } from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CommandError } from '../../agent/core/errors.js'
import type { Runner } from '../../agent/core/exec.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { SlurmGuard, SCONTROL_RETRY } from '../../agent/daemon/slurm.js'
import type { ObserverContext } from '../../agent/daemon/observer.js'

const SHA = 'fe91bed4ff8c0123456789abcdef0123456789abcdef0123456789abcdef0123'
const fastRetry = { ...SCONTROL_RETRY, baseDelayMs: 1, maxDelayMs: 2, minDelayMs: 0 }

const setup = async (t: Test, run: Runner, dryRun = false) => {
  const dir = await mkdtemp(join(tmpdir(), 'ba-slurm-guard-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const logs: Array<{ level: string; msg: string }> = []
  const log = {
    child: () => log,
    info: (_o: unknown, msg: string) => logs.push({ level: 'info', msg }),
    warn: (_o: unknown, msg: string) => logs.push({ level: 'warn', msg }),
    error: (_o: unknown, msg: string) => logs.push({ level: 'error', msg }),
    debug: () => undefined,
  } as unknown as import('../../agent/core/log.js').Logger
  const guard = new SlurmGuard({ mode: 'drain+resume', nodeName: 'cn1', run, dryRun, retry: fastRetry, log })
  const ctx: ObserverContext = { node: 'cn1', bootId: 'b1', stateDir: dir, stats: async () => ({ kmsgLost: 0, spooled: 0, lostEvents: 0, errorsByKind: {} }) }
  await guard.start(ctx)
  return { guard, logs, dir }
}

const trouble = makeEvent('squashfs-error', 'cn1', { count: 3 } as never, { image: { sha256: SHA } })

t.test('scontrol failing: three attempts each, then logged and counted; the next trouble tries again', async (t) => {
  const calls: string[][] = []
  const run: Runner = async (cmd, args) => {
    calls.push([...args])
    throw new CommandError({ command: cmd, args, exitCode: 1, stderr: 'slurm_load_node error: Unable to contact slurm controller (connect failure)' })
  }
  const { guard, logs } = await setup(t, run)
  for (let i = 0; i < 50; i++) guard.events([trouble]) // a flood while slurmctld is down
  await guard.idle()
  t.equal(calls.length, 6, 'one drain for the whole flood: show node, 3 attempts; update DRAIN, 3 attempts')
  t.same(calls.filter((a) => a[0] === 'update').length, 3)
  t.equal(guard.counters.failures, 2)
  t.equal(guard.counters.drains, 0)
  t.ok(logs.some((l) => l.level === 'error' && /could not drain cn1/.test(l.msg)), 'the failure is logged')
  guard.events([trouble])
  await guard.idle()
  t.equal(calls.length, 12, 'a failed drain is tried again on the next trouble')
  await guard.stop()
})

t.test('dry run: reads the state, logs the update it would run, runs none', async (t) => {
  const calls: string[][] = []
  const run: Runner = async (_cmd, args) => {
    calls.push([...args])
    return { exitCode: 0, signal: null, stdout: 'NodeName=cn1 State=IDLE Reason=(null)\n', stderr: '' }
  }
  const { guard, logs, dir } = await setup(t, run, true)
  guard.events([trouble])
  await guard.idle()
  t.same(calls, [['show', 'node', '-o', 'cn1']], 'only the read ran')
  t.equal(guard.counters.dryRuns, 1)
  t.ok(logs.some((l) => /would drain cn1 \(boot-agent: squashfs-error sha256:fe91bed4ff8c\)/.test(l.msg)), 'the command it would run is logged')
  await t.rejects(readFile(join(dir, 'slurm.json')), 'no drain recorded')
})

t.test('a real drain is recorded with the boot id, once per boot', async (t) => {
  const calls: string[][] = []
  const run: Runner = async (_cmd, args) => {
    calls.push([...args])
    return { exitCode: 0, signal: null, stdout: args[0] === 'show' ? 'NodeName=cn1 State=IDLE\n' : '', stderr: '' }
  }
  const { guard, dir } = await setup(t, run)
  guard.events([trouble])
  guard.events([trouble])
  await guard.idle()
  t.same(calls.filter((a) => a[0] === 'update'), [['update', 'NodeName=cn1', 'State=DRAIN', 'Reason=boot-agent: squashfs-error sha256:fe91bed4ff8c']])
  t.match(JSON.parse(await readFile(join(dir, 'slurm.json'), 'utf8')), { bootId: 'b1', nodeName: 'cn1', reason: /^boot-agent:/ })
})
