/**
 * The daemon under Type=notify (agent/daemon/notify.ts): READY=1 once it reads
 * the kernel log, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM,
 * each sent by the real systemd-notify. systemd itself cannot run here (no
 * systemd as PID 1), so a python3 unix datagram listener stands in for the
 * manager's notify socket; like systemd it closes the barrier fd that
 * systemd-notify passes, which is what lets systemd-notify return.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createNotifier, watchdogPingMs } from '../../agent/daemon/notify.js'
import { silentLogger } from '../../agent/core/log.js'
import type { Runner } from '../../agent/core/exec.js'
import { gate } from '../helpers/capability.js'
import { BUNDLE } from '../helpers/run-cli.js'
import { waitUntil } from '../helpers/wait.js'

t.test('the watchdog is pinged at half its timeout, and only for the PID it names', async (t) => {
  t.equal(watchdogPingMs({ WATCHDOG_USEC: '60000000' }), 30_000)
  t.equal(watchdogPingMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: String(process.pid) }), 30_000)
  t.equal(watchdogPingMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '1' }), undefined, "another process's watchdog")
  t.equal(watchdogPingMs({}), undefined)
  t.equal(watchdogPingMs({ WATCHDOG_USEC: '0' }), undefined)
  t.equal(watchdogPingMs({ WATCHDOG_USEC: 'soon' }), undefined)
})

// WatchdogSec=60d (an administrator "turning the watchdog off") gives WATCHDOG_USEC
// past what a Node timer holds (2^31-1 ms): setInterval then fires every 1 ms, and
// the daemon spawned a systemd-notify per millisecond (672 in 4 s, measured).
t.test('a watchdog longer than a timer can hold is pinged at the longest timer, never every millisecond', async (t) => {
  const MAX_TIMER_MS = 2 ** 31 - 1
  for (const usec of ['5184000000000', '99999999999999999999']) {
    const ms = watchdogPingMs({ WATCHDOG_USEC: usec })
    t.ok(ms !== undefined && ms <= MAX_TIMER_MS && ms > 60_000, `WATCHDOG_USEC=${usec}: ping every ${ms} ms`)
  }
})

t.test('no NOTIFY_SOCKET (run by hand): no notifier; a failing systemd-notify is logged once, never fatal', async (t) => {
  t.equal(createNotifier({ log: silentLogger(), env: {} }), undefined)
  const calls: string[][] = []
  const failing: Runner = async (_cmd, args) => {
    calls.push([...args])
    throw new Error('systemd-notify: not found')
  }
  const lines: unknown[] = []
  const log = silentLogger()
  log.warn = ((...a: unknown[]) => void lines.push(a)) as typeof log.warn
  const n = createNotifier({ log, env: { NOTIFY_SOCKET: '/run/x' }, run: failing })!
  await n.send({ READY: '1', STATUS: 'two\nlines' })
  await n.send({ WATCHDOG: '1' })
  t.same(calls, [['READY=1', 'STATUS=two lines'], ['WATCHDOG=1']], 'one assignment per argument, no newline inside one')
  t.equal(lines.length, 1, 'warned once')
})

/** The stand-in notify socket: prints each datagram as one line, closes passed fds (the barrier). */
const LISTENER = `
import socket, sys, os, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
print("listening", flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(64 * 4))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(msg.decode().replace("\\n", "|"), flush=True)
`

t.test('boot-agent daemon sends READY=1, WATCHDOG=1 and STOPPING=1 through systemd-notify', gate('root', 'kmsg', 'systemd-notify'), async (t) => {
  const dir = t.testdir()
  // A unix socket path must fit in 108 bytes; the test directory's may not.
  const sockDir = mkdtempSync(join(tmpdir(), 'ba-notify-'))
  t.teardown(() => rmSync(sockDir, { recursive: true, force: true }))
  const socketPath = join(sockDir, 'notify.sock')
  const procs: ChildProcess[] = []
  t.teardown(() => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
  })
  const listener = spawn('python3', ['-c', LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] })
  procs.push(listener)
  let received = ''
  listener.stdout!.setEncoding('utf8').on('data', (d: string) => (received += d))
  await waitUntil('the stand-in notify socket', () => received.includes('listening'))
  const messages = (): string[] => received.split('\n').filter((l) => l && l !== 'listening')

  const daemon = spawn(process.execPath, [BUNDLE, 'daemon', '--node', 'notify-n1', '--state-dir', join(dir, 'state'),
    '--boot-record', join(dir, 'none.json'), '--heartbeat-interval', '0', '--no-self-check'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // 400 ms watchdog: a ping every 200 ms.
    env: { ...process.env, NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '400000', BOOT_AGENT_LOG_LEVEL: 'info', BOOT_AGENT_LOG_FORMAT: 'json' },
  })
  procs.push(daemon)
  let stderr = ''
  daemon.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const ready = await waitUntil('READY=1', () => messages().find((m) => m.includes('READY=1')), { timeoutMs: 30_000 }).catch((e: Error) => {
    throw new Error(`${e.message}; daemon said:\n${stderr}`)
  })
  t.match(ready, /STATUS=watching the kernel log for node notify-n1/, 'a status line for systemctl status')
  t.ok(stderr.includes('reading the whole kernel log') || stderr.includes('resuming the kernel log'), 'ready only after it resumed its position')
  await waitUntil('two watchdog pings', () => messages().filter((m) => m === 'WATCHDOG=1').length >= 2, { timeoutMs: 15_000 })
  const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r(code)))
  daemon.kill('SIGTERM')
  t.equal(await exited, 0, 'a clean stop')
  await waitUntil('STOPPING=1', () => messages().some((m) => m.startsWith('STOPPING=1')), { timeoutMs: 10_000 })
  const pingsAtStop = messages().filter((m) => m === 'WATCHDOG=1').length
  await new Promise((r) => setTimeout(r, 500))
  t.equal(messages().filter((m) => m === 'WATCHDOG=1').length, pingsAtStop, 'no pings after the daemon exited')
})
