/**
 * What a cache path is before it is opened, and whether it may be (#22
 * finding 5): `cache ls --cache /tmp` used to chmod /tmp 0700 and create
 * objects/ and tmp/ in it. The look touches nothing (lstat, readdir; no
 * symlink followed); the decision is pure; store.ts `Cache.open` acts on it.
 *
 * The rule: a reader (`mustExist`) opens a cache or an empty directory as it
 * is, and refuses anything else. A writer creates a new directory, opens a
 * cache (tightening its own directories to 0700), or makes an empty directory
 * of its own a cache (a freshly made filesystem: lost+found only); it refuses
 * a directory holding other files, or a shared one (world-writable or sticky,
 * like /tmp), whose mode it would otherwise take away from everyone else.
 */
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { BootAgentError, isErrno } from '../core/errors.js'

/**
 * Entries a directory may hold and still become a cache: a fresh ext4's
 * lost+found, and the agent's own names on a cache partition (tmp/ of a
 * half-made cache, the boot stage's spool/). An objects/ that is not a
 * directory is not among them: it is someone else's.
 */
export const ADOPTABLE_ENTRIES: ReadonlySet<string> = new Set(['lost+found', 'tmp', 'spool'])

export type CacheDirState =
  | { kind: 'missing' }
  | { kind: 'not-a-directory' }
  /** objects/ is a directory there: a cache, whatever else is beside it. */
  | { kind: 'cache' }
  /** Nothing but {@link ADOPTABLE_ENTRIES}; `shared`: world-writable or sticky. */
  | { kind: 'empty'; mode: number; shared: boolean }
  /** Not a cache, and other entries are there (the first few names). */
  | { kind: 'foreign'; entries: string[]; count: number }
  /** This user may not look inside (a root-only cache read by another user): `owner` and `mode` of the directory, `reader` this process's uid. */
  | { kind: 'unreadable'; owner: number; mode: number; reader: number | undefined }

/** Looks at `dir` without following a symlink or changing anything. */
export const inspectCacheDir = async (dir: string): Promise<CacheDirState> => {
  let st
  try {
    st = await lstat(dir)
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENOTDIR')) return { kind: 'missing' }
    throw e
  }
  if (!st.isDirectory()) return { kind: 'not-a-directory' }
  const unreadable = { kind: 'unreadable', owner: st.uid, mode: st.mode & 0o7777, reader: process.getuid?.() } as const
  let denied = false
  const objects = await lstat(join(dir, 'objects')).catch((e: unknown) => {
    denied = isErrno(e, 'EACCES', 'EPERM')
    return undefined
  })
  if (objects?.isDirectory()) return { kind: 'cache' }
  if (denied) return unreadable
  let names: string[]
  try {
    names = (await readdir(dir)).sort()
  } catch (e) {
    if (isErrno(e, 'EACCES', 'EPERM')) return unreadable
    throw e
  }
  const others = names.filter((e) => !ADOPTABLE_ENTRIES.has(e))
  if (others.length) return { kind: 'foreign', entries: others.slice(0, 3), count: others.length }
  // Shared: anyone may write there (o+w), or the sticky bit says it is everybody's (/tmp is 1777).
  const mode = st.mode & 0o7777
  return { kind: 'empty', mode, shared: (mode & 0o1002) !== 0 }
}

const holding = (s: { entries: string[]; count: number }): string =>
  `${s.count} other entr${s.count === 1 ? 'y' : 'ies'}: ${s.entries.join(', ')}${s.count > s.entries.length ? ', …' : ''}`

/** Why `dir` must not be opened as a cache in this mode, or undefined when it may (pure). */
export const refuseToOpen = (dir: string, s: CacheDirState, mustExist: boolean): BootAgentError | undefined => {
  if (s.kind === 'cache') return undefined
  if (s.kind === 'unreadable') {
    // A cache is root-only (0700) on purpose (SPEC §12): say so, instead of a bare EACCES from deep inside.
    return new BootAgentError('ECACHE', `cannot read the cache at ${dir} as uid ${s.reader ?? '?'}: the directory belongs to uid ${s.owner} with mode ${s.mode.toString(8).padStart(4, '0')} (a cache is root-only by design); run the command as root (sudo boot-agent …)`, { path: dir })
  }
  if (mustExist) {
    switch (s.kind) {
      case 'missing':
        return new BootAgentError('ENOCACHE', `no cache at ${dir}: no such directory (a cache is made by \`boot-agent fetch --cache DIR\` or by a boot; check the path)`, { path: dir })
      case 'not-a-directory':
        return new BootAgentError('ENOCACHE', `no cache at ${dir}: not a directory (symlinks are not followed)`, { path: dir })
      case 'foreign':
        return new BootAgentError('ENOCACHE', `no cache at ${dir}: it is not a boot-agent cache (no objects/ directory, and it holds ${holding(s)}); nothing was changed (check the path)`, { path: dir })
      case 'empty':
        return undefined // an empty cache, read as it is
    }
  }
  switch (s.kind) {
    case 'missing':
      return undefined // created
    case 'not-a-directory':
      return new BootAgentError('ECACHE', `cache path ${dir} is not a directory (symlinks are not followed)`, { path: dir })
    case 'foreign':
      return new BootAgentError('ECACHE', `${dir} is not a boot-agent cache (no objects/ directory) and is not empty (it holds ${holding(s)}): refusing to make it one, which would make it root-only (0700); give a new or empty directory of its own`, { path: dir })
    case 'empty':
      return s.shared
        ? new BootAgentError('ECACHE', `${dir} is not a boot-agent cache and is a shared directory (mode ${s.mode.toString(8)}): refusing to make it one, which would make it root-only (0700) for every user; give a directory of its own, e.g. ${join(dir, 'boot-agent-cache')}`, { path: dir })
        : undefined
  }
}
