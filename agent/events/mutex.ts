/**
 * A promise-chain mutex: spooling events together with the kmsg position,
 * and removing delivered events, must not interleave (see agent/daemon/daemon.ts
 * for why that gives exactly-once across a crash).
 */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve()

  /** Runs `fn` after every earlier `run` has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn)
    this.tail = next.catch(() => undefined)
    return next
  }
}
