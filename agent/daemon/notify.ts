/**
 * The service manager's notify protocol (sd_notify(3)) for `boot-agent
 * daemon` under Type=notify: READY=1 once the daemon watches the kernel log,
 * WATCHDOG=1 while its event loop runs, STOPPING=1 on the way out, STATUS=
 * for `systemctl status`.
 *
 * The protocol is a datagram on the unix socket NOTIFY_SOCKET names; Node has
 * no unix datagram sockets, so each message is sent by systemd-notify(1). It
 * runs as a child of the daemon, so the unit says NotifyAccess=all; without
 * --no-block it waits until the manager has taken the message (a barrier,
 * since systemd 246), so the child exiting first cannot lose it. A message
 * that cannot be sent is logged, never fatal: the daemon's work goes on (and
 * a missing READY=1 shows as a start timeout in `systemctl status`).
 */
import { commands } from '../core/system.js'
import { run as realRun, type Runner } from '../core/exec.js'
import { messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'

/** Deadline for one systemd-notify run (it waits for the manager's barrier). */
const NOTIFY_TIMEOUT_MS = 10_000
/** The longest delay a Node timer holds; a longer one fires after 1 ms (TimeoutOverflowWarning). */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * How often to send WATCHDOG=1 for the watchdog systemd set (WATCHDOG_USEC,
 * for this process when WATCHDOG_PID is set): half the timeout, as
 * sd_watchdog_enabled(3) advises. Undefined when there is no watchdog.
 */
export const watchdogPingMs = (env: NodeJS.ProcessEnv, pid = process.pid): number | undefined => {
  const usec = env.WATCHDOG_USEC
  if (!usec || !/^\d+$/.test(usec) || Number(usec) === 0) return undefined
  if (env.WATCHDOG_PID && env.WATCHDOG_PID !== String(pid)) return undefined
  // A watchdog of 25 days or more (WatchdogSec=60d) would overflow the timer into a ping per millisecond.
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(Number(usec) / 1000 / 2)))
}

export interface Notifier {
  /** Sends `KEY=value` assignments, e.g. `{ READY: '1', STATUS: '…' }`. */
  send: (state: Record<string, string>) => Promise<void>
  /** Sends WATCHDOG=1 every watchdogPingMs until `signal` aborts; a no-op without a watchdog. */
  watchdog: (signal: AbortSignal) => void
}

export interface NotifierOptions {
  log: Logger
  env?: NodeJS.ProcessEnv
  /** Runs systemd-notify (tests script one; default agent/core/exec.ts). */
  run?: Runner
}

/** A notifier, or undefined when no service manager listens (NOTIFY_SOCKET unset: run by hand). */
export const createNotifier = (opts: NotifierOptions): Notifier | undefined => {
  const env = opts.env ?? process.env
  if (!env.NOTIFY_SOCKET) return undefined
  const run = opts.run ?? realRun
  let warned = false
  const send = async (state: Record<string, string>): Promise<void> => {
    // Newlines would split an assignment in two (the protocol is one per line).
    const args = Object.entries(state).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
    try {
      await run(commands.systemdNotify, args, { timeoutMs: NOTIFY_TIMEOUT_MS })
    } catch (e) {
      // Once: a watchdog ping every few seconds must not flood the journal.
      if (!warned) opts.log.warn({ err: messageOf(e), state: Object.keys(state).join(',') }, 'cannot notify the service manager (systemd-notify)')
      warned = true
    }
  }
  const watchdog = (signal: AbortSignal): void => {
    const everyMs = watchdogPingMs(env)
    if (everyMs === undefined || signal.aborted) return
    // The ping comes from the event loop: a loop stuck in a busy wait or a
    // blocking call stops the pings, and systemd restarts the daemon.
    const timer = setInterval(() => void send({ WATCHDOG: '1' }), everyMs)
    timer.unref()
    signal.addEventListener('abort', () => clearInterval(timer), { once: true })
  }
  return { send, watchdog }
}
