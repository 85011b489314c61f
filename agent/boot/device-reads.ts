/**
 * How much a boot read from the cache device while it checked the image
 * (issue #19): a hit measured by fs-verity reads next to nothing, a fast
 * verify the whole object. Read from the kernel's own I/O accounting,
 * `/sys/class/block/<dev>/stat` (Documentation/block/stat.rst: the third
 * field is sectors read, in 512-byte units whatever the device's sector
 * size), before and after; page-cache hits are not counted, only the device.
 */
import { readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { system } from '../core/system.js'

/** The unit of the stat file's sector counts (fixed by the kernel, not the device's sector size). */
export const STAT_SECTOR_BYTES = 512

/** Sectors read, from the text of a block device's `stat` file (pure); undefined when it is not one. */
export const parseSectorsRead = (text: string): number | undefined => {
  const f = text.trim().split(/\s+/)
  const n = Number(f[2])
  return f.length >= 11 && Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/** Counts the bytes read from one device from now until `stop()` (undefined when the kernel does not say). */
export interface ReadCounter {
  device: string
  stop(): Promise<number | undefined>
}

const sectorsRead = (statFile: string): Promise<number | undefined> => readFile(statFile, 'utf8').then(parseSectorsRead, () => undefined)

/** Starts counting the bytes read from `device` (`/dev/vdb2`). */
export const startReadCounter = async (device: string, sysClassBlock = system.sysClassBlock): Promise<ReadCounter> => {
  const statFile = join(sysClassBlock, basename(device), 'stat')
  const before = await sectorsRead(statFile)
  return {
    device,
    stop: async () => {
      const after = await sectorsRead(statFile)
      return before === undefined || after === undefined ? undefined : (after - before) * STAT_SECTOR_BYTES
    },
  }
}

/** Which check made the image usable, in the words the record and the log use (pure). */
export const verificationName = (hit: boolean, verifiedBy: string | undefined): string => {
  if (!hit) return verifiedBy === 'download' ? 'download (every chunk and the whole sha256 checked as written)' : 'none'
  if (verifiedBy === 'manifest-fsverity') return 'measured fs-verity'
  if (verifiedBy?.endsWith('-xxh64')) return 'fast verify'
  return 'strong verify'
}
