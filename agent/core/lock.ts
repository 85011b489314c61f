/**
 * The one inter-process lock (the cache's per-object write lock, the head's
 * per-name publish lock): a lock file holding the owner's pid, the kernel
 * boot id and a random nonce. A lock whose owner is gone (pid not alive, or
 * written in an earlier boot — the cache outlives reboots) is stale and taken
 * over, so a kill -9 never wedges anyone.
 *
 * Race-free, with no check-then-remove anywhere:
 * - A lock is created whole: its content goes into a unique temp file, which
 *   is then link(2)ed to the lock's name. link never clobbers (EEXIST), so
 *   two creators cannot both win, and a lock is never seen half-written.
 * - A stale lock is removed only by the holder of its takeover guard,
 *   `<lock>.takeover-<id>` (itself a lock of this kind), where `id` names
 *   that one lock file (its nonce; for a lock without one, its inode and
 *   ctime). Under the guard, the lock is read again: only if it is still the
 *   same stale file is it removed. Nobody else can remove that file meanwhile
 *   (its owner is dead, other takers wait for the guard) and no new lock can
 *   appear while it is there, so the check cannot go out of date. A taker
 *   killed while holding a guard leaves a stale guard, taken over the same
 *   way one level down.
 * - Everyone then competes for the freed name through link again.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { link, open, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { BootAgentError, isErrno } from './errors.js'
import { system } from './system.js'
import { type Clock, type Sleep, sleep as realSleep, systemClock } from './clock.js'
import { namePath } from './durable.js'

/** How often a waiting process looks at the lock again. */
export const LOCK_POLL_MS = 100
/** Default longest wait for another process's lock. */
export const LOCK_TIMEOUT_MS = 30 * 60 * 1000
/** Lock files are root's alone. */
const LOCK_FILE_MODE = 0o600
/** Guards of guards: each level needs a taker killed mid-takeover, so a deeper chain is not an accident. */
const MAX_TAKEOVER_DEPTH = 4
/** Largest pid Linux hands out (PID_MAX_LIMIT, include/linux/threads.h); anything above is not a pid. */
const PID_MAX = 4 * 1024 * 1024

/** A lock held (by someone else, or — `ELOCKED` — too long). */
export class LockedError extends BootAgentError {
  readonly path: string
  readonly pid: number
  constructor(path: string, pid: number, message = `lock ${path} is held by pid ${pid}`) {
    super('ELOCKED', message, { path, pid })
    this.path = path
    this.pid = pid
  }
}

export interface Lock {
  path: string
  release(): Promise<void>
}

export interface LockOptions {
  signal?: AbortSignal
  /** Give up waiting after this long ({@link LockedError}). Default {@link LOCK_TIMEOUT_MS}. */
  timeoutMs?: number
  /** Look again after this long while a live process holds the lock. Default {@link LOCK_POLL_MS}. */
  pollMs?: number
  /** Called once when we start waiting for a live owner. */
  onWait?: (owner: { pid: number }) => void
  /** The deadline's time source. Default the system clock. */
  clock?: Clock
  /** The wait between looks. Default the real, abortable sleep. */
  sleep?: Sleep
}

/**
 * Whether a process with this pid exists. `kill(pid, 0)` succeeding, or
 * failing with EPERM (it exists, owned by another user), means alive; only
 * ESRCH means gone (kill(2)). In doubt it is alive: a live lock wrongly
 * taken over is far worse than a wait.
 */
export const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return !isErrno(e, 'ESRCH')
  }
}

let bootId: string | undefined
const currentBootId = (): string => {
  if (bootId === undefined) {
    try {
      bootId = readFileSync(system.bootId, 'utf8').trim()
    } catch {
      bootId = ''
    }
  }
  return bootId
}

/** What a lock file says: `pid\nbootId\nnonce\n` (locks written before the nonce have none). */
interface LockRecord {
  pid: number
  bootId: string
  nonce: string | undefined
}

const NONCE = /^[0-9a-f]{16,64}$/

const parseLockText = (text: string): LockRecord | undefined => {
  const [pidText = '', boot = '', nonce = ''] = text.split('\n')
  const pid = /^\d+$/.test(pidText) ? Number(pidText) : NaN
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid > PID_MAX) return undefined
  return { pid, bootId: boot, nonce: NONCE.test(nonce) ? nonce : undefined }
}

/** The lock at `path` as found now. */
type Seen =
  | { kind: 'gone' }
  | { kind: 'live'; pid: number }
  /** `id` names this very file; `empty`: no content at all (maybe being written by an older agent). */
  | { kind: 'stale'; id: string; empty: boolean }

/** Reads the lock at `path` through one open file, so its identity and its content belong together. */
const look = async (path: string): Promise<Seen> => {
  let fh
  try {
    fh = await open(path, 'r')
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return { kind: 'gone' }
    throw e
  }
  let text: string
  let st
  try {
    st = await fh.stat({ bigint: true })
    text = await fh.readFile('utf8')
  } finally {
    await fh.close()
  }
  const rec = parseLockText(text)
  if (rec && rec.bootId === currentBootId() && (rec.pid === process.pid || pidAlive(rec.pid))) {
    // Our own pid: another holder in this process (another Cache, another publish): wait for it.
    return { kind: 'live', pid: rec.pid }
  }
  return { kind: 'stale', id: rec?.nonce ?? `i${st.ino}-${st.ctimeNs}`, empty: text === '' }
}

/** Creates the lock at `path` whole (temp file, then link); false when one exists. */
const tryCreate = async (path: string): Promise<boolean> => {
  const nonce = randomBytes(8).toString('hex')
  const tmp = join(dirname(path), `.${basename(path)}.${nonce}.tmp`)
  const fh = await open(tmp, 'wx', LOCK_FILE_MODE)
  try {
    try {
      await fh.writeFile(`${process.pid}\n${currentBootId()}\n${nonce}\n`)
    } finally {
      await fh.close()
    }
    await link(tmp, path)
    return true
  } catch (e) {
    if (isErrno(e, 'EEXIST')) return false
    throw namePath(e, path) // e.g. ENOSPC: the caller may act on it (the cache's eviction does)
  } finally {
    await rm(tmp, { force: true })
  }
}

/**
 * Takes the lock at `path`, waiting (bounded, abortable) while a live
 * process holds it; a stale lock is taken over (see the top of this file).
 */
export const acquireLock = (path: string, opts: LockOptions = {}): Promise<Lock> => {
  const clock = opts.clock ?? systemClock
  return acquire(path, opts, clock.now() + (opts.timeoutMs ?? LOCK_TIMEOUT_MS), 0)
}

const acquire = async (path: string, opts: LockOptions, deadline: number, depth: number): Promise<Lock> => {
  const clock = opts.clock ?? systemClock
  const sleep = opts.sleep ?? realSleep
  const pollMs = opts.pollMs ?? LOCK_POLL_MS
  let waited = false
  let emptySeen = false
  // Bounded by the deadline: every pass creates, takes over a stale lock, or waits one poll.
  for (;;) {
    if (opts.signal?.aborted) throw opts.signal.reason
    if (await tryCreate(path)) return held(path)
    const seen = await look(path)
    if (seen.kind === 'gone') continue
    if (seen.kind === 'stale') {
      // An empty lock may be one an older agent (create, then write) is writing this instant: give it one poll.
      if (seen.empty && !emptySeen) {
        emptySeen = true
        await sleep(pollMs, opts.signal)
        continue
      }
      await takeOver(path, seen.id, opts, deadline, depth)
      continue
    }
    if (!waited) {
      waited = true
      opts.onWait?.({ pid: seen.pid })
    }
    if (clock.now() > deadline) throw new LockedError(path, seen.pid)
    await sleep(pollMs, opts.signal)
  }
}

/** Removes the stale lock file `id` at `path`, holding its takeover guard; a no-op when someone else already did. */
const takeOver = async (path: string, id: string, opts: LockOptions, deadline: number, depth: number): Promise<void> => {
  if (depth >= MAX_TAKEOVER_DEPTH) {
    throw new BootAgentError('ELOCKED', `cannot take over the stale lock ${path}: ${depth} takeovers of it were interrupted (remove ${path}.takeover-*)`, { path })
  }
  const guard = await acquire(`${path}.takeover-${id}`, { ...opts, onWait: undefined }, deadline, depth + 1)
  try {
    const now = await look(path)
    // Still the same stale file: nobody else may remove it while we hold its guard, and no lock can replace it.
    if (now.kind === 'stale' && now.id === id) await rm(path, { force: true })
  } finally {
    await guard.release()
  }
}

const held = (path: string): Lock => {
  let released = false
  return {
    path,
    release: async () => {
      if (released) return
      released = true
      // Ours until we remove it: a live owner's lock is never taken over.
      await rm(path, { force: true })
    },
  }
}

/** Runs `fn` holding the lock at `path`, released however `fn` ends. */
export const withLock = async <T>(path: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> => {
  const lock = await acquireLock(path, opts)
  try {
    return await fn()
  } finally {
    await lock.release()
  }
}
