/**
 * A per-object write lock: a lock file created with O_EXCL holding the
 * owner's pid and the kernel boot id. A lock whose owner is gone (pid not
 * alive, or written in an earlier boot — the cache outlives reboots) is stale
 * and taken over, so a kill -9 never wedges the cache.
 */
import { link, open, readFile, rm, rename } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { BootAgentError, isErrno } from '../errors.js'
import { system } from '../system.js'
import { FILE_MODE } from './layout.js'
import { sleep } from '../transport/retry.js'

/** How often a waiting process looks at the lock again. */
export const LOCK_POLL_MS = 100
/** Default longest wait for another process's lock. */
export const LOCK_TIMEOUT_MS = 30 * 60 * 1000

export interface Lock {
  path: string
  release(): Promise<void>
}

export interface LockOptions {
  signal?: AbortSignal
  /** Give up waiting after this long (ELOCKED). */
  timeoutMs?: number
  /** Called once when we start waiting for a live owner. */
  onWait?: (owner: { pid: number }) => void
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

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return isErrno(e, 'EPERM') // exists, not ours
  }
}

/** The lock's owner when it is alive; undefined when the lock is stale (or unreadable garbage). */
const liveOwner = async (path: string): Promise<{ pid: number } | undefined | 'gone'> => {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return 'gone'
    throw e
  }
  const [pidText = '', boot = ''] = text.split('\n')
  const pid = Number(pidText)
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    // Written by a process killed between create and write: stale if it stays so.
    return undefined
  }
  if (boot !== currentBootId()) return undefined
  if (pid === process.pid) return { pid } // our own (another Cache in this process): wait
  return pidAlive(pid) ? { pid } : undefined
}

const tryCreate = async (path: string): Promise<boolean> => {
  try {
    const fh = await open(path, 'wx', FILE_MODE)
    try {
      await fh.writeFile(`${process.pid}\n${currentBootId()}\n`)
    } catch (e) {
      // e.g. ENOSPC: leave no empty lock behind.
      await fh.close().catch(() => undefined)
      await rm(path, { force: true })
      throw e
    }
    await fh.close()
    return true
  } catch (e) {
    if (isErrno(e, 'EEXIST')) return false
    throw e
  }
}

/**
 * Takes the lock at `path`, waiting (bounded, abortable) while a live
 * process holds it.
 */
export const acquireLock = async (path: string, opts: LockOptions = {}): Promise<Lock> => {
  const deadline = Date.now() + (opts.timeoutMs ?? LOCK_TIMEOUT_MS)
  let waited = false
  let garbageSeen = 0
  for (;;) {
    if (opts.signal?.aborted) throw opts.signal.reason
    if (await tryCreate(path)) {
      let released = false
      return {
        path,
        release: async () => {
          if (released) return
          released = true
          await rm(path, { force: true })
        },
      }
    }
    const owner = await liveOwner(path)
    if (owner === 'gone') continue
    if (owner === undefined) {
      // Unreadable content may be a lock being written this instant: give it one poll.
      const text = await readFile(path, 'utf8').catch(() => '')
      if (text === '' && garbageSeen++ < 1) {
        await sleep(LOCK_POLL_MS, opts.signal)
        continue
      }
      // Stale. Move it aside under a unique name (atomic), then check we moved the
      // stale one and not a fresh lock another process created meanwhile.
      const aside = `${path}.stale.${process.pid}.${Math.random().toString(36).slice(2)}`
      try {
        await rename(path, aside)
      } catch (e) {
        if (isErrno(e, 'ENOENT')) continue
        throw e
      }
      const movedOwner = await liveOwner(aside)
      if (movedOwner !== undefined && movedOwner !== 'gone') {
        // We moved a live lock: put it back (link never clobbers a newer one).
        await link(aside, path).catch(() => undefined)
      }
      await rm(aside, { force: true })
      continue
    }
    if (!waited) {
      waited = true
      opts.onWait?.(owner)
    }
    if (Date.now() > deadline) {
      throw new BootAgentError('ELOCKED', `lock ${path} is held by pid ${owner.pid}`, { path, pid: owner.pid })
    }
    await sleep(LOCK_POLL_MS, opts.signal)
  }
}
