/**
 * Worker threads kept between jobs. A worker's start-up (a new V8 isolate,
 * 30–140 ms here) is paid once per process, and can be paid early: a command
 * that will hash soon starts its workers while it loads and reads metadata.
 *
 * Parked workers are unref'd, so they never keep the process alive, and end
 * after IDLE_WORKER_MS, so a long-lived process (the daemon) does not keep
 * their threads and ~10 MB each.
 */
import { Worker } from 'node:worker_threads'

/** A worker left idle this long is ended. */
export const IDLE_WORKER_MS = 5000

/** Worker threads parked between jobs, each ended after a while unused. */
export class IdleWorkers {
  private readonly idle: Worker[] = []
  private readonly timers = new Map<Worker, NodeJS.Timeout>()

  /**
   * `spawn` starts one worker (its listeners for a job are added by the caller
   * of take()); a worker parked for `idleMs` (default {@link IDLE_WORKER_MS}) is ended.
   */
  constructor(
    private readonly spawn: () => Worker,
    private readonly opts: { idleMs?: number } = {},
  ) {}

  /** An idle worker (ref'd again: a job keeps the process alive), or a new one. */
  take(): Worker {
    const w = this.idle.pop()
    if (!w) return this.start()
    this.forget(w)
    w.ref()
    return w
  }

  /** Parks a worker that has answered every job it was given, for the next take(). */
  park(w: Worker): void {
    w.unref()
    this.idle.push(w)
    const timer = setTimeout(() => {
      this.remove(w)
      void w.terminate()
    }, this.opts.idleMs ?? IDLE_WORKER_MS)
    timer.unref()
    this.timers.set(w, timer)
  }

  /** Starts workers now, parked, until `count` are idle. */
  prewarm(count: number): void {
    for (let k = this.idle.length; k < count; k++) this.park(this.start())
  }

  /** How many workers are idle. */
  get size(): number {
    return this.idle.length
  }

  /** Ends the idle workers now (they would end on their own after IDLE_WORKER_MS). */
  async end(): Promise<void> {
    const all = this.idle.splice(0)
    for (const w of all) this.forget(w)
    await Promise.all(all.map((w) => w.terminate()))
  }

  private start(): Worker {
    const w = this.spawn()
    // A worker that dies while idle just leaves the pool; a busy one also fails its job (the caller's listeners).
    w.on('error', () => undefined)
    w.on('exit', () => this.remove(w))
    return w
  }

  private remove(w: Worker): void {
    const k = this.idle.indexOf(w)
    if (k >= 0) this.idle.splice(k, 1)
    this.forget(w)
  }

  private forget(w: Worker): void {
    clearTimeout(this.timers.get(w))
    this.timers.delete(w)
  }
}
