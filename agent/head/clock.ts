/**
 * The head's one way to read the time (lru-cache's `perf` in spirit): rate
 * limits, the consistency view's `generatedAt` and the durations it logs all
 * read it, so a test can run the head on a clock it moves itself.
 */

/** A clock in milliseconds since the epoch. */
export interface Clock {
  now(): number
}

/** The wall clock. */
export const systemClock: Clock = { now: () => Date.now() }
