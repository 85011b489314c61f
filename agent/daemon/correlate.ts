/**
 * Maps a classified kernel error to the device, the cache object and the
 * image it hit (SPEC §9): device → loop device → backing file
 * (/sys/block/loopN/loop/backing_file) → cache object
 * (<cache>/objects/sha256/aa/rest) → image digest and name.
 *
 * Which device a squashfs error came from — the rule, in order:
 *  1. the record's dictionary names it (DEVICE=b7:N → /sys/dev/block/7:N);
 *  2. otherwise (squashfs messages carry no device: they are printed with
 *     pr_err, which has no dictionary — verified on this kernel) we look at
 *     the squashfs filesystems mounted from loop devices
 *     (/proc/self/mountinfo). Exactly one → that one (`single-squashfs-loop`).
 *  3. Several → if the message names a block offset, keep those whose image
 *     is larger than it (`offset-fits`); then keep those backed by an object
 *     in this node's cache (`cached-squashfs-loop`). One left → it.
 *  4. Still several → `ambiguous`: the event lists the candidates and the
 *     self-check re-verifies every candidate object (verification decides).
 *
 * An error on the unpacked root partition (the boot record's root.device)
 * is an `io-error` with the booted image's digest.
 */
import { readFile, readlink, stat } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { system } from '../core/system.js'
import type { ClassifiedError } from './classify.js'
import type { BootRecordView } from './boot-record.js'
import { parseObjectPath, readObjectMeta } from './object-meta.js'
import type { ImageRef } from '../protocol/event.js'

export interface ObjectRef {
  sha256: string
  path: string
  cacheDir: string
}

export interface Correlation {
  /** Kernel device name (loop0, sda2) when known. */
  device?: string
  /** How `device` was found (see the module comment). */
  rule: 'message' | 'dictionary' | 'single-squashfs-loop' | 'cached-squashfs-loop' | 'offset-fits' | 'ambiguous' | 'none'
  /** Backing file when the device is a loop device. */
  backingFile?: string
  /** The cache object the device reads, when it is one. */
  object?: ObjectRef
  image?: ImageRef
  /** `root` when the device holds the booted image's unpacked root; `cache` for the cache partition. */
  role?: 'root' | 'cache' | 'image'
  /** Ambiguous squashfs errors: every squashfs loop device that could have logged it. */
  candidates?: { device: string; object?: ObjectRef }[]
}

export interface CorrelatorOptions {
  bootRecord?: BootRecordView
  /** Cache directories whose objects are this node's (from the boot record or --cache-dir). */
  cacheDirs?: string[]
}

interface MountedSquashfs {
  device: string
}

/** Parses /proc/self/mountinfo into the squashfs mounts whose source is a block device. */
export const parseSquashfsMounts = (text: string): MountedSquashfs[] => {
  const out: MountedSquashfs[] = []
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ')
    if (sep < 0) continue
    const [fstype, source] = line.slice(sep + 3).split(' ')
    if (fstype !== 'squashfs' || !source?.startsWith('/dev/')) continue
    const device = basename(source)
    if (!out.some((m) => m.device === device)) out.push({ device })
  }
  return out
}

const devName = (p: string | undefined): string | undefined => (p ? basename(p) : undefined)

export class Correlator {
  private readonly bootRecord: BootRecordView | undefined
  private readonly cacheDirs: string[]

  constructor(opts: CorrelatorOptions = {}) {
    this.bootRecord = opts.bootRecord
    const dirs = [...(opts.cacheDirs ?? [])]
    if (opts.bootRecord?.cache?.mountpoint) dirs.push(opts.bootRecord.cache.mountpoint)
    const booted = opts.bootRecord?.cache?.objectPath ? parseObjectPath(opts.bootRecord.cache.objectPath) : undefined
    if (booted) dirs.push(booted.cacheDir)
    this.cacheDirs = dirs.map((d) => resolve(d))
  }

  /** The loop device's backing file, or undefined when it is not a (bound) loop device. */
  async backingFile(device: string): Promise<string | undefined> {
    if (!/^loop\d{1,6}$/.test(device)) return undefined
    try {
      const text = (await readFile(join(system.sysBlock, device, 'loop', 'backing_file'), 'utf8')).trim()
      return text.replace(/ \(deleted\)$/, '') || undefined
    } catch {
      return undefined
    }
  }

  /** The cache object at `path`, when it is laid out as one (in one of our cache dirs, when any is configured). */
  objectAt(path: string | undefined): ObjectRef | undefined {
    if (!path) return undefined
    const p = parseObjectPath(path)
    if (!p) return undefined
    if (this.cacheDirs.length && !this.cacheDirs.includes(resolve(p.cacheDir))) return undefined
    return { sha256: p.sha256, path, cacheDir: p.cacheDir }
  }

  private async imageOf(object: ObjectRef): Promise<ImageRef> {
    let name: string | undefined
    try {
      name = (await readObjectMeta(object.path)).names.at(-1) // oldest first: the last is the current name
    } catch {
      /* no or bad meta: fall back to the boot record */
    }
    if (!name && this.bootRecord?.image?.sha256 === object.sha256) name = this.bootRecord.image.name
    return name ? { name, sha256: object.sha256 } : { sha256: object.sha256 }
  }

  private async describe(device: string, rule: Correlation['rule']): Promise<Correlation> {
    const out: Correlation = { device, rule }
    const backing = await this.backingFile(device)
    if (backing) out.backingFile = backing
    const object = this.objectAt(backing)
    if (object) {
      out.object = object
      out.image = await this.imageOf(object)
      out.role = 'image'
      return out
    }
    const br = this.bootRecord
    const rootDev = devName(br?.root?.device)
    if (rootDev && rootDev === device) {
      out.role = 'root'
      if (br?.image?.sha256) out.image = br.image.name ? { name: br.image.name, sha256: br.image.sha256 } : { sha256: br.image.sha256 }
    } else if (devName(br?.cache?.device) === device) {
      out.role = 'cache'
    }
    return out
  }

  private async fromDevnum(devnum: string): Promise<string | undefined> {
    try {
      return basename(await readlink(join(system.sysDevBlock, devnum)))
    } catch {
      return undefined
    }
  }

  private async imageSize(device: string, backing: string | undefined): Promise<number | undefined> {
    if (backing) {
      try {
        return (await stat(backing)).size
      } catch {
        /* fall through to the device size */
      }
    }
    try {
      return Number((await readFile(join(system.sysBlock, device, 'size'), 'utf8')).trim()) * 512
    } catch {
      return undefined
    }
  }

  /** Where `err` happened, as far as the machine can tell. Never throws. */
  async correlate(err: ClassifiedError): Promise<Correlation> {
    if (err.devnum) {
      const dev = await this.fromDevnum(err.devnum)
      if (dev) return this.describe(dev, 'dictionary')
    }
    if (err.device) return this.describe(err.device, 'message')
    if (err.source !== 'squashfs') return { rule: 'none' }
    let mounts: MountedSquashfs[] = []
    try {
      mounts = parseSquashfsMounts(await readFile(system.procMountinfo, 'utf8'))
    } catch {
      return { rule: 'none' }
    }
    if (mounts.length === 0) return { rule: 'none' }
    if (mounts.length === 1) return this.describe(mounts[0]!.device, 'single-squashfs-loop')
    let pool = await Promise.all(mounts.map(async (m) => ({ device: m.device, backing: await this.backingFile(m.device) })))
    if (err.blockOffset !== undefined) {
      const offset = err.blockOffset
      const sized = await Promise.all(pool.map(async (d) => ({ d, size: await this.imageSize(d.device, d.backing) })))
      const fits = sized.filter((s) => s.size === undefined || s.size > offset).map((s) => s.d)
      if (fits.length === 1) return this.describe(fits[0]!.device, 'offset-fits')
      if (fits.length) pool = fits
    }
    const cached = pool.filter((d) => this.objectAt(d.backing))
    if (cached.length === 1) return this.describe(cached[0]!.device, 'cached-squashfs-loop')
    if (cached.length) pool = cached
    const candidates = pool.map((d) => {
      const object = this.objectAt(d.backing)
      return object ? { device: d.device, object } : { device: d.device }
    })
    return { rule: 'ambiguous', candidates }
  }
}
