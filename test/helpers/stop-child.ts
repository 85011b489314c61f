/**
 * Ends a server a test started: `signal` (its graceful stop), then SIGKILL
 * after `graceMs`; resolves once it has exited. Safe on one already gone.
 */
import type { ChildProcess } from 'node:child_process'

export const stopChild = async (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise((r) => child.once('exit', r))
  child.kill(signal)
  const hard = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await gone
  clearTimeout(hard)
}
