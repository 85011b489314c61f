/**
 * Real loop-backed disks for tests: a sparse file, a loop device, a real
 * filesystem with a real label. Labels carry a random suffix: blkid sees
 * every helper's loop devices on this shared machine, so a fixed label could
 * match someone else's disk.
 *
 * Everything made here is undone by `detach()` / {@link unmountUnder}, which
 * touch only what the test made (never `losetup -D`).
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, rm, symlink, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const exec = promisify(execFile)

/** A label no other test or helper uses: `prefix-xxxxxx` (ext4 allows 16 characters, xfs 12). */
export const uniqueLabel = (prefix: string): string => `${prefix}-${randomBytes(3).toString('hex')}`.slice(0, 12)

export interface LoopDisk {
  /** The backing file. */
  file: string
  /** /dev/loopN. */
  device: string
  label?: string
  /** Unmounts anything on the device, detaches it and deletes the file. */
  detach(): Promise<void>
}

export interface LoopDiskOptions {
  /** Directory for the backing file. */
  dir: string
  sizeMiB: number
  /** Filesystem to create; `null` for none. Default ext4. */
  fs?: 'ext4' | 'xfs' | null
  label?: string
}

/** Mount points currently using `device` (from /proc/self/mounts). */
export const mountsOf = async (device: string): Promise<string[]> => {
  const { stdout } = await exec('findmnt', ['-rn', '-o', 'TARGET', '-S', device]).catch(() => ({ stdout: '' }))
  return stdout.split('\n').filter(Boolean)
}

export const makeLoopDisk = async (opts: LoopDiskOptions): Promise<LoopDisk> => {
  await mkdir(opts.dir, { recursive: true })
  const file = join(opts.dir, `disk-${randomBytes(4).toString('hex')}.img`)
  await writeFile(file, '')
  await truncate(file, opts.sizeMiB * 1024 * 1024)
  const fs = opts.fs === undefined ? 'ext4' : opts.fs
  if (fs === 'ext4') await exec('mkfs.ext4', ['-q', '-F', ...(opts.label ? ['-L', opts.label] : []), file])
  if (fs === 'xfs') await exec('mkfs.xfs', ['-q', '-f', ...(opts.label ? ['-L', opts.label] : []), file])
  const { stdout } = await exec('losetup', ['--find', '--show', file])
  const device = stdout.trim()
  let detached = false
  return {
    file,
    device,
    ...(opts.label ? { label: opts.label } : {}),
    detach: async () => {
      if (detached) return
      detached = true
      for (const m of (await mountsOf(device)).reverse()) await exec('umount', ['-l', m]).catch(() => undefined)
      await exec('losetup', ['-d', device]).catch(() => undefined)
      await rm(file, { force: true })
    },
  }
}

/** Unmounts every mount at or below `dir`, innermost first (for teardown). */
export const unmountUnder = async (dir: string): Promise<string[]> => {
  const { stdout } = await exec('findmnt', ['-rn', '-o', 'TARGET']).catch(() => ({ stdout: '' }))
  // findmnt -r escapes spaces as \x20; test dirs have none.
  const targets = stdout
    .split('\n')
    .filter((m) => m === dir || m.startsWith(dir.endsWith('/') ? dir : dir + '/'))
    .sort((a, b) => b.length - a.length)
  for (const m of targets) {
    await exec('umount', [m]).catch(() => exec('umount', ['-l', m]).catch(() => undefined))
  }
  return targets
}

/** Loop devices backed by files under `dir` (to check nothing is left behind). */
export const loopDevicesUnder = async (dir: string): Promise<string[]> => {
  const { stdout } = await exec('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE', '--raw']).catch(() => ({ stdout: '' }))
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([, back]) => back !== undefined && back.startsWith(dir))
    .map(([name]) => name ?? '')
}

/** A small OS tree: an executable /sbin/init, /init → sbin/init, some files and a nested dir. */
export const makeOsTree = async (dir: string, opts: { extraBytes?: number; marker?: string } = {}): Promise<string> => {
  await mkdir(join(dir, 'sbin'), { recursive: true })
  await mkdir(join(dir, 'etc'), { recursive: true })
  await mkdir(join(dir, 'usr', 'share', 'doc'), { recursive: true })
  await mkdir(join(dir, 'var', 'empty'), { recursive: true })
  await writeFile(join(dir, 'sbin', 'init'), '#!/bin/sh\necho "hello from the booted image"\nexec /bin/sh\n')
  await chmod(join(dir, 'sbin', 'init'), 0o755)
  await symlink('sbin/init', join(dir, 'init'))
  await writeFile(join(dir, 'etc', 'os-release'), `NAME="boot-agent test OS"\nID=batest\nVERSION_ID="${opts.marker ?? '1'}"\n`)
  await writeFile(join(dir, 'etc', 'hostname'), 'compute\n')
  await writeFile(join(dir, 'usr', 'share', 'doc', 'README'), 'A tiny OS tree for boot-agent tests.\n'.repeat(200))
  if (opts.extraBytes) await writeFile(join(dir, 'usr', 'share', 'blob.bin'), randomBytes(opts.extraBytes))
  return dir
}

/** Builds a real squashfs of `tree` (reproducible: fixed times). */
export const mksquashfs = async (tree: string, out: string, extra: string[] = []): Promise<string> => {
  await rm(out, { force: true })
  await exec('mksquashfs', [tree, out, '-noappend', '-quiet', '-no-progress', '-mkfs-time', '0', '-all-time', '0', ...extra], {
    maxBuffer: 16 * 1024 * 1024,
  })
  return out
}

/**
 * path → a digest of what is there (type, mode, owner, content or link
 * target), for comparing an unpacked root with the tree the image was built
 * from. `skip` names top-level entries to leave out (lost+found, the marker).
 */
export const hashTree = async (root: string, skip: string[] = ['lost+found', '.boot-agent-image']): Promise<Record<string, string>> => {
  const { createHash } = await import('node:crypto')
  const { lstat, readdir, readFile, readlink } = await import('node:fs/promises')
  const out: Record<string, string> = {}
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      if (rel === '' && skip.includes(name)) continue
      const r = rel ? `${rel}/${name}` : name
      const p = join(root, r)
      const st = await lstat(p)
      const head = `${(st.mode & 0o170000).toString(8)}:${(st.mode & 0o7777).toString(8)}:${st.uid}:${st.gid}`
      if (st.isSymbolicLink()) out[r] = `${head}:link:${await readlink(p)}`
      else if (st.isFile()) out[r] = `${head}:file:${createHash('sha256').update(await readFile(p)).digest('hex')}`
      else if (st.isDirectory()) {
        out[r] = `${head}:dir`
        await walk(r)
      } else out[r] = `${head}:other`
    }
  }
  await walk('')
  return out
}

export interface Scratch {
  /** A fresh directory under /tmp for this test (not tap's testdir: mounts live here). */
  dir: string
  /** Makes a loop disk whose backing file lives in `dir` (undone at teardown). */
  disk(opts: Omit<LoopDiskOptions, 'dir'>): Promise<LoopDisk>
  /** Unmounts everything under `dir`, detaches its loop devices, deletes it. Idempotent. */
  cleanup(): Promise<void>
}

/**
 * One teardown for everything a root test makes: mounts under the directory
 * first (innermost first), then its loop devices, then the files — whatever
 * order the test made them in, and even when it failed half-way.
 */
export const scratch = async (t: { teardown(fn: () => Promise<void>): void }, prefix = 'ba-boot-'): Promise<Scratch> => {
  const { mkdtemp } = await import('node:fs/promises')
  const dir = await mkdtemp(join('/tmp', prefix))
  const disks: LoopDisk[] = []
  const cleanup = async (): Promise<void> => {
    await unmountUnder(dir)
    for (const d of disks) await d.detach()
    for (const dev of await loopDevicesUnder(dir)) await exec('losetup', ['-d', dev]).catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
  }
  t.teardown(cleanup)
  return {
    dir,
    disk: async (opts) => {
      const d = await makeLoopDisk({ ...opts, dir: join(dir, 'disks') })
      disks.push(d)
      return d
    },
    cleanup,
  }
}
