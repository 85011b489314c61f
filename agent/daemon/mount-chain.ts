/**
 * The mount chain of an overlay root (issue #19), for `status` and the
 * daemon's log: root → overlay (its upper directory) → the lower layer's
 * mount → the loop device → the cache object → its digest. Read from the
 * kernel's own tables (/proc/self/mountinfo, the loop devices' backing
 * files), so it shows what is mounted, not what the boot record meant.
 */
import { readFile } from 'node:fs/promises'
import { readLoopBackings, type LoopBacking } from '../cache/pin.js'
import { system } from '../core/system.js'
import { parseObjectPath } from './object-meta.js'

export interface MountInfoEntry {
  mountpoint: string
  fstype: string
  source: string
  superOptions: string
}

export interface MountChain {
  /** Where the overlay root is mounted (`/` after switch_root, the sysroot before). */
  root: string
  upper?: string
  lower: string
  /** `/dev/loopN`. */
  loop?: string
  object?: string
  /** The object's sha256 when its path is a cache object's (objects/sha256/ab/cdef…). */
  digest?: string
}

/** mountinfo escapes space, tab, newline and backslash as octal (`\040`). */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))

/** Parses /proc/self/mountinfo (proc(5)): mount point is field 5, then after " - ": fstype, source, super options. */
export const parseMountInfo = (text: string): MountInfoEntry[] => {
  const out: MountInfoEntry[] = []
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ')
    if (sep < 0) continue
    const left = line.slice(0, sep).split(' ')
    const right = line.slice(sep + 3).split(' ')
    const mp = left[4]
    if (mp === undefined || right.length < 3) continue
    out.push({ mountpoint: unescape(mp), fstype: right[0] ?? '', source: unescape(right[1] ?? ''), superOptions: right[2] ?? '' })
  }
  return out
}

const option = (opts: string, key: string): string | undefined => {
  const hit = opts.split(',').find((o) => o.startsWith(`${key}=`))
  return hit === undefined ? undefined : unescape(hit.slice(key.length + 1))
}

/**
 * The chain of the first of `roots` that is an overlay whose (first) lower
 * layer is a mounted squashfs; undefined when none is (pure). The last
 * mount at a point wins, as the kernel shows it.
 */
export const mountChain = (mounts: readonly MountInfoEntry[], loops: readonly LoopBacking[], roots: readonly string[]): MountChain | undefined => {
  const at = (p: string): MountInfoEntry | undefined => mounts.filter((m) => m.mountpoint === p).at(-1)
  for (const root of roots) {
    const ov = at(root)
    if (ov?.fstype !== 'overlay') continue
    const lower = option(ov.superOptions, 'lowerdir')?.split(':')[0]
    if (!lower) continue
    const upper = option(ov.superOptions, 'upperdir')
    const lowerMount = at(lower)
    const chain: MountChain = { root, lower, ...(upper ? { upper } : {}) }
    if (lowerMount?.fstype !== 'squashfs') return chain
    chain.loop = lowerMount.source
    const backing = loops.find((l) => `/dev/${l.device}` === lowerMount.source)
    if (backing) {
      chain.object = backing.backingFile
      const digest = parseObjectPath(backing.backingFile)?.sha256
      if (digest) chain.digest = digest
    }
    return chain
  }
  return undefined
}

/** The chain as one line: `/ → overlay (upper …) → lower → /dev/loop3 → object → sha256:…`. */
export const formatMountChain = (c: MountChain): string =>
  [c.root, `overlay${c.upper ? ` (upper ${c.upper})` : ''}`, c.lower, c.loop ?? '?', c.object ?? '?', c.digest ? `sha256:${c.digest}` : '?'].join(' → ')

/** Reads the chain of the overlay root at `/` or at one of `also` (the boot record's sysroot, before switch_root). */
export const readMountChain = async (also: readonly string[] = []): Promise<MountChain | undefined> => {
  const text = await readFile(system.procMountinfo, 'utf8').catch(() => '')
  return mountChain(parseMountInfo(text), await readLoopBackings().catch(() => []), ['/', ...also])
}
