/**
 * Time, the one way every room reads it and waits on it: a {@link Clock} to
 * inject where a decision depends on the time, and one abortable
 * {@link sleep} for every wait (lru-cache's `perf`, glob's `signal`: one
 * documented way in, so a test swaps it instead of waiting).
 */

/** A source of the current time: inject one where a decision depends on "now". */
export interface Clock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number
}

/** The real time. */
export const systemClock: Clock = { now: () => Date.now() }

/** A wait of `ms` that ends early, rejecting with the abort reason, when `signal` aborts. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>

/** Waits `ms` milliseconds; rejects with `signal.reason` when `signal` aborts (before or during the wait). */
export const sleep: Sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
