/**
 * Waiting for something a test expects (a log line, a file, a state), by
 * polling for it with a deadline: never a fixed sleep, which is too short on
 * a loaded machine and wasted time on an idle one.
 */

/** Polls `check` every `everyMs` until it gives a truthy value (returned) or `deadlineMs` passes (undefined). */
export const waitFor = async <T>(check: () => T | Promise<T>, deadlineMs: number, everyMs = 50): Promise<T | undefined> => {
  const end = Date.now() + deadlineMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() >= end) return undefined
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

type Falsy = false | 0 | '' | null | undefined

/** Like {@link waitFor}, but an error naming `what` when the deadline passes (default 10 s). */
export const waitUntil = async <T>(
  what: string,
  check: () => T | Falsy | Promise<T | Falsy>,
  opts: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> => {
  const timeoutMs = opts.timeoutMs ?? 10_000
  const v = await waitFor(check, timeoutMs, opts.everyMs ?? 20)
  if (!v) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
  return v
}
