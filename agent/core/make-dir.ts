/**
 * `mkdir -p` that always ends.
 *
 * Node 20's `mkdir(path, { recursive: true })` spins forever at 100 % CPU,
 * deaf to SIGTERM, when a directory cannot be made though its parent exists
 * and the kernel answers ENOENT: procfs and sysfs do (`mkdir /proc/x`), so
 * `boot-agent head --events /proc/x` hung. Here each missing component is
 * made once, top down, and such a path fails with ECONFIG naming it.
 */
import { mkdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { BootAgentError, isErrno } from './errors.js'

/**
 * Makes `path` and its missing parents (each with `mode`, as `mkdir -p`).
 * An existing directory is fine; an existing file is EEXIST, as with Node's
 * recursive mkdir. Work is bounded by the number of path components.
 */
export const makeDir = async (path: string, mode?: number): Promise<void> => {
  const target = resolve(path)
  const opts = mode === undefined ? {} : { mode }
  const missing: string[] = []
  // Up from the target until a component exists (or is made): at most one step per component.
  for (let p = target; ; p = dirname(p)) {
    try {
      await mkdir(p, opts)
      break
    } catch (e) {
      if (isErrno(e, 'EEXIST')) {
        if (p === target && !(await stat(p)).isDirectory()) throw e
        break
      }
      if (!isErrno(e, 'ENOENT') || dirname(p) === p) throw e
      missing.push(p)
    }
  }
  // Down again: each missing component once; ENOENT now means the kernel refuses it.
  for (const p of missing.reverse()) {
    try {
      await mkdir(p, opts)
    } catch (e) {
      if (isErrno(e, 'EEXIST') && (await stat(p)).isDirectory()) continue
      if (isErrno(e, 'ENOENT')) {
        throw new BootAgentError('ECONFIG', `cannot create directory ${p}: its parent ${dirname(p)} exists but refuses new entries (a kernel file system such as /proc or /sys?)`, { path: p }, { cause: e })
      }
      throw e
    }
  }
}
