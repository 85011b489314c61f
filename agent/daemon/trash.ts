/**
 * Empties the root partition's trash after an overlay boot (issue #19): the
 * old upper and work directories the boot stage renamed away
 * (agent/boot/overlay.ts) are deleted here, in the background, one entry at
 * a time, each by `ionice -c3 rm -rf --one-file-system` (the idle I/O class:
 * a disk busy with the job's own I/O is never slowed by it; a child process
 * because Node cannot set the I/O priority of the threads that would do the
 * unlinking).
 *
 * Crash-safe by construction: the trash holds nothing but what is to go and
 * is never part of any root, so a kill -9 or a power cut mid-deletion leaves
 * a partly deleted entry that the next run deletes the rest of. Progress is
 * logged per entry (started, finished with duration, entries left).
 */
import { lstat, readdir, realpath } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join } from 'node:path'
import { BootAgentError, isErrno, messageOf } from '../core/errors.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import type { Logger } from '../core/log.js'
import { commands } from '../core/system.js'
import type { BootRecordView } from './boot-record.js'

/** Deleting one old layer has no deadline worth guessing; a day bounds a stuck disk. */
const DELETE_TIMEOUT_MS = 24 * 60 * 60_000

export interface TrashResult {
  /** Entries deleted. */
  deleted: number
  /** Entries whose deletion failed (left for the next run). */
  failed: number
  /** Entries still in the trash at the end. */
  left: number
}

const entries = async (trash: string): Promise<string[]> => {
  try {
    return (await readdir(trash)).sort()
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return []
    throw e
  }
}

/**
 * Refuses (EOVERLAY) a trash that is not a real `.boot-agent/trash`
 * directory reached without a symbolic link: `rm -rf trash/ENTRY` resolves
 * every link on the way, so a trash (or its `.boot-agent`, or any directory
 * above) that is a link would delete whatever it points at — `/` on a hostile
 * or damaged root partition, or a boot record naming another path. A missing
 * trash is fine (nothing to do).
 */
const checkTrashPath = async (trash: string): Promise<boolean> => {
  const refuse = (why: string): never => {
    throw new BootAgentError('EOVERLAY', `refusing to empty the trash ${trash}: ${why}; nothing deleted`, { trash })
  }
  if (!isAbsolute(trash) || basename(trash) !== 'trash' || basename(dirname(trash)) !== '.boot-agent') refuse('not an absolute path ending in .boot-agent/trash')
  let st
  try {
    st = await lstat(trash)
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return false
    throw e
  }
  if (!st.isDirectory()) refuse(st.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a directory')
  if ((await realpath(trash)) !== trash) refuse(`the path goes through a symbolic link or .. (it resolves to ${await realpath(trash)})`)
  return true
}

/** The command that deletes one trash entry at idle I/O priority. */
export const deleteCommand = (path: string): { command: string; args: string[] } => ({
  command: commands.ionice,
  args: ['-c3', commands.rm, '-rf', '--one-file-system', '--', path],
})

/** Deletes everything in `trash` (an absolute path ending in `.boot-agent/trash`). Never throws for one entry. */
export const emptyTrash = async (trash: string, opts: { run?: Runner; log: Logger; signal?: AbortSignal }): Promise<TrashResult> => {
  const run = opts.run ?? defaultRun
  const log = opts.log
  const todo = (await checkTrashPath(trash)) ? await entries(trash) : []
  const result: TrashResult = { deleted: 0, failed: 0, left: todo.length }
  if (todo.length === 0) return result
  log.info({ op: 'trash', trash, entries: todo.length }, `deleting ${todo.length} old layer(s) from the trash at idle I/O priority`)
  for (const [i, name] of todo.entries()) {
    if (opts.signal?.aborted) break
    const path = join(trash, name)
    const started = performance.now()
    const c = deleteCommand(path)
    try {
      await run(c.command, c.args, { timeoutMs: DELETE_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) })
      result.deleted++
      log.info({ op: 'trash', entry: name, ms: Math.round(performance.now() - started), left: todo.length - i - 1 }, `deleted ${name} from the trash`)
    } catch (e) {
      result.failed++
      log.warn({ op: 'trash', entry: name, err: messageOf(e) }, `could not delete ${name} from the trash; the next run tries again`)
    }
  }
  result.left = (await entries(trash)).length
  return result
}

/** The daemon's start: empties the trash an overlay boot's record names (undefined when there is none). Never rejects. */
export const emptyBootTrash = (record: BootRecordView | undefined, opts: { log: Logger; signal?: AbortSignal; run?: Runner }): Promise<void> | undefined => {
  const trash = record?.root?.mode === 'overlay' ? record.root.trash : undefined
  if (!trash) return undefined
  return emptyTrash(trash, opts).then(
    (r) => opts.log.info({ op: 'trash', trash, ...r }, r.left === 0 ? 'trash emptied' : `${r.left} trash entries left for the next run`),
    (e: unknown) => opts.log.error({ op: 'trash', trash, err: messageOf(e) }, 'could not empty the trash'),
  )
}
