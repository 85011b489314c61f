/**
 * Real parts for the daemon's acceptance tests: a squashfs built by the real
 * mksquashfs, placed as a cache object (layout and meta as the pipeline
 * writes them, fixed 64 KiB chunks), corrupted in its data blocks (never the
 * superblock or the tables), loop-mounted read-only; and helpers to read the
 * real /dev/kmsg.
 */
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { constants } from 'node:fs'
import { join } from 'node:path'
import { parseKmsgRecord, type KmsgRecord } from '../../agent/daemon/kmsg.js'
import { xxh64Segments } from '../../agent/hash/segments.js'
import type { Chunk } from '../../agent/manifest/types.js'
import { acquireLock } from '../../agent/core/lock.js'

export const CHUNK_BYTES = 64 * 1024

export interface CorruptImage {
  dir: string
  cacheDir: string
  objectPath: string
  sha256: string
  name: string
  size: number
  /** Byte ranges overwritten [start, end). */
  corrupted: [number, number][]
  /** Chunk indexes those ranges touch. */
  badChunks: number[]
  chunks: number
  /** The clean image (what a head node would serve). */
  cleanPath: string
  chunkList: Chunk[]
}

export const buildCorruptImage = async (tag: string): Promise<CorruptImage> => {
  const dir = await mkdtemp(`/var/tmp/ba-daemon-${tag}-`)
  const src = join(dir, 'src')
  await mkdir(src)
  // Compressible but not trivial: base64 of random bytes, several blocks per file.
  for (let i = 0; i < 8; i++) await writeFile(join(src, `file${i}`), randomBytes(300_000).toString('base64'))
  const img = join(dir, 'image.sqfs')
  execFileSync('mksquashfs', [src, img, '-comp', 'xz', '-noappend', '-quiet', '-no-progress'], { stdio: 'ignore' })
  const clean = await readFile(img)
  const sha256 = createHash('sha256').update(clean).digest('hex')
  const chunks = []
  for (let off = 0, i = 0; off < clean.length; off += CHUNK_BYTES, i++) {
    const part = clean.subarray(off, Math.min(clean.length, off + CHUNK_BYTES))
    chunks.push({ index: i, offset: off, size: part.length, sha256: createHash('sha256').update(part).digest('hex') })
  }
  const cacheDir = join(dir, 'cache')
  const objDir = join(cacheDir, 'objects', 'sha256', sha256.slice(0, 2))
  await mkdir(objDir, { recursive: true })
  const objectPath = join(objDir, sha256.slice(2))
  const name = `daemon-test-${tag}-${randomBytes(3).toString('hex')}`
  // The meta exactly as the pipeline's Cache writes it (agent/cache/meta.ts), so Cache.verify/markCorrupt accept it.
  const { xxh64 } = await xxh64Segments(img)
  await writeFile(`${objectPath}.meta.json`, JSON.stringify({
    schema: 2, size: clean.length, sha256, xxh64, chunks, verifiedAt: new Date().toISOString(),
    lastUsedAt: new Date().toISOString(), names: [name], urls: [],
  }))
  // Data blocks lie between the 96-byte superblock and inode_table_start (u64 LE at offset 64).
  const inodeTable = Number(clean.readBigUInt64LE(64))
  const corrupted: [number, number][] = [0.25, 0.6].map((f) => {
    const start = Math.floor(96 + (inodeTable - 96) * f)
    return [start, start + 256]
  })
  const bad = Buffer.from(clean)
  for (const [s, e] of corrupted) randomBytes(e - s).copy(bad, s)
  await writeFile(objectPath, bad)
  const badChunks = [...new Set(corrupted.flatMap(([s, e]) => {
    const out = []
    for (let c = Math.floor(s / CHUNK_BYTES); c <= Math.floor((e - 1) / CHUNK_BYTES); c++) out.push(c)
    return out
  }))].sort((a, b) => a - b)
  return { dir, cacheDir, objectPath, sha256, name, size: clean.length, corrupted, badChunks, chunks: chunks.length, cleanPath: img, chunkList: chunks }
}

export interface Mounted {
  device: string
  mountpoint: string
  detach(): Promise<void>
}

/** losetup + mount -t squashfs -o ro; detach() undoes both (safe to call twice). */
export const mountImage = async (image: CorruptImage): Promise<Mounted> => {
  const dev = execFileSync('losetup', ['--find', '--show', '--read-only', image.objectPath], { encoding: 'utf8' }).trim()
  const mountpoint = join(image.dir, 'mnt')
  await mkdir(mountpoint, { recursive: true })
  let mounted = false
  let attached = true
  const detach = async (): Promise<void> => {
    if (mounted) {
      try {
        execFileSync('umount', [mountpoint], { stdio: 'ignore' })
      } catch {
        execFileSync('umount', ['-l', mountpoint], { stdio: 'ignore' })
      }
      mounted = false
    }
    if (attached) {
      execFileSync('losetup', ['-d', dev], { stdio: 'ignore' })
      attached = false
    }
  }
  try {
    execFileSync('mount', ['-t', 'squashfs', '-o', 'ro', dev, mountpoint], { stdio: 'ignore' })
    mounted = true
  } catch (e) {
    await detach()
    throw e
  }
  return { device: dev.replace('/dev/', ''), mountpoint, detach }
}

/** Drops page caches, then reads every file; returns how many reads failed with EIO. */
export const readEverything = async (mountpoint: string): Promise<number> => {
  await writeFile('/proc/sys/vm/drop_caches', '3')
  let failed = 0
  for (const f of await readdir(mountpoint)) {
    try {
      await readFile(join(mountpoint, f))
    } catch {
      failed++
    }
  }
  return failed
}

/** Every record in the ring now, read with a non-blocking fd. */
export const readRing = async (): Promise<KmsgRecord[]> => {
  const fh = await open('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK)
  const out: KmsgRecord[] = []
  const buf = Buffer.alloc(16 * 1024)
  try {
    for (let i = 0; i < 1_000_000; i++) {
      let n: number
      try {
        n = (await fh.read(buf, 0, buf.length, null)).bytesRead
      } catch (e) {
        if ((e as { code?: string }).code === 'EPIPE') continue
        break // EAGAIN: the end
      }
      const r = parseKmsgRecord(buf.toString('utf8', 0, n))
      if (r) out.push(r)
    }
  } finally {
    await fh.close()
  }
  return out
}

export const lastKmsgSeq = async (): Promise<number> => {
  const ring = await readRing()
  return ring[ring.length - 1]?.seq ?? -1
}

export const bootId = async (): Promise<string> => (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()

/** The daemon tests run the real CLI as a process: the shared bundling helper builds it. */
export { bundleAgent } from '../helpers/bundle.js'

export const removeImage = async (image: CorruptImage): Promise<void> => {
  await rm(image.dir, { recursive: true, force: true })
}

export { waitFor } from '../helpers/wait.js'

/**
 * Held by every test that makes genuine squashfs errors, for its whole run:
 * squashfs errors name no device, so errors made by one test file while
 * another's daemon reads the kernel log would be taken for the other's image
 * (tap runs files two at a time). Released at teardown; a killed holder's
 * lock is stale and taken over (agent/core/lock.ts).
 */
export const holdKernelErrors = async (): Promise<() => Promise<void>> => {
  const lock = await acquireLock('/var/tmp/ba-test-kernel-errors.lock', { timeoutMs: 10 * 60_000 })
  return () => lock.release()
}
