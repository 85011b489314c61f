/**
 * Turns kernel log records into classified errors (pure, table-driven).
 *
 * Only kernel-facility records are considered: a process can write any text
 * into /dev/kmsg, but it lands with facility 1 (user) or its own, never 0.
 *
 * Message shapes, as printed by the kernels we target (verified on this
 * machine's 6.18 kernel by reading a corrupted squashfs; see
 * test/daemon/real-kernel.test.ts):
 *
 *   SQUASHFS error: xz decompression failed, data probably corrupt
 *   SQUASHFS error: Failed to read block 0x18b44: -5
 *   SQUASHFS error: Unable to read data cache entry [18b44]
 *   SQUASHFS error: Unable to read page, block 18b44, size 18b34
 *   SQUASHFS error: Unable to read fragment cache entry [...] / metadata cache entry [...]
 *   I/O error, dev loop0, sector 2048 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2
 *   blk_update_request: I/O error, dev sda, sector 1234 (kernels before 5.x)
 *   Buffer I/O error on dev sda1, logical block 123, async page read
 *   EXT4-fs error (device sda2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0
 *   XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0x…
 *   fs-verity (vdb2, inode 12): FILE CORRUPTED! index=40, level=0, want_hash=sha256:…, real_hash=sha256:…
 *     (fs/verity/verify.c, Linux 5.4–6.2: `index` is the data page; from 6.3 `pos=` a byte offset;
 *     printed by fsverity_msg as "fs-verity (<s_id>, inode <ino>): …": the filesystem's device
 *     and the sealed file's inode, which correlate.ts turns into the cache object)
 *
 * squashfs messages name no device (fs/squashfs/squashfs_fs.h prints them
 * with pr_err, which carries no dictionary); the "block" they name is a byte
 * offset into the filesystem image, which is what lets the self-check point
 * at the bad chunk. correlate.ts finds the device.
 */
import { FACILITY_KERNEL, type KmsgRecord } from './kmsg.js'

export type ErrorKind = 'squashfs-error' | 'io-error'

export interface ClassifiedError {
  kind: ErrorKind
  /** Stable class name, part of the coalescing key (e.g. `decompression-failed`). */
  class: string
  /** Kernel device name when the message or the dictionary names one (`loop0`, `sda2`). */
  device?: string
  /** Block device number from the dictionary's DEVICE=bMAJ:MIN, when present. */
  devnum?: string
  /** squashfs: byte offset of the block in the image. */
  blockOffset?: number
  /** squashfs: the block's (compressed) size in bytes, when printed. */
  blockSize?: number
  /** Block layer: 512-byte sector. */
  sector?: number
  /** Buffer layer: logical block of the filesystem. */
  logicalBlock?: number
  /** squashfs: the decompressor that failed (xz, zstd, gzip, lz4, lzo). */
  compressor?: string
  /** Kernel errno printed (e.g. -5). */
  errno?: number
  /** fs-verity: the inode of the sealed file whose block failed verification (on `device`). */
  inode?: number
  /** Filesystem that complained: squashfs, ext4, xfs; `block` for the block layer; `fsverity` (a sealed cache object). */
  source: 'squashfs' | 'block' | 'ext4' | 'xfs' | 'fsverity'
}

interface Rule {
  source: ClassifiedError['source']
  kind: ErrorKind
  class: string
  re: RegExp
  /** Only when the record's level is at most this (err = 3). Default: any level. */
  maxLevel?: number
  fields: (m: RegExpExecArray) => Partial<ClassifiedError>
}

const hex = (s: string | undefined): number | undefined => {
  if (s === undefined) return undefined
  const n = parseInt(s, 16)
  return Number.isSafeInteger(n) ? n : undefined
}
const dec = (s: string | undefined): number | undefined => {
  if (s === undefined) return undefined
  const n = Number(s)
  return Number.isSafeInteger(n) ? n : undefined
}

const mul = (n: number | undefined, by: number): number | undefined => (n === undefined || !Number.isSafeInteger(n * by) ? undefined : n * by)

/** fs-verity before Linux 6.3 names the data page (`index=`): 4096 bytes on the x86_64 and arm64 kernels we boot. */
const FSVERITY_PAGE_BYTES = 4096

/** First match wins; order from most to least specific. */
export const RULES: readonly Rule[] = [
  {
    source: 'squashfs', kind: 'squashfs-error', class: 'decompression-failed',
    re: /^SQUASHFS error: (\w+) decompression failed/,
    fields: (m) => ({ compressor: m[1] }),
  },
  {
    source: 'squashfs', kind: 'squashfs-error', class: 'read-block-failed',
    re: /^SQUASHFS error: Failed to read block 0x([0-9a-fA-F]{1,16}): (-?\d{1,5})/,
    fields: (m) => ({ blockOffset: hex(m[1]), errno: dec(m[2]) }),
  },
  {
    source: 'squashfs', kind: 'squashfs-error', class: 'unable-to-read-page',
    re: /^SQUASHFS error: Unable to read page, block ([0-9a-fA-F]{1,16}), size ([0-9a-fA-F]{1,8})/,
    fields: (m) => ({ blockOffset: hex(m[1]), blockSize: hex(m[2]) }),
  },
  {
    source: 'squashfs', kind: 'squashfs-error', class: 'unable-to-read-cache-entry',
    re: /^SQUASHFS error: Unable to read (?:data|fragment|metadata) cache entry \[([0-9a-fA-F]{1,16})\]/,
    fields: (m) => ({ blockOffset: hex(m[1]) }),
  },
  {
    source: 'squashfs', kind: 'squashfs-error', class: 'other',
    re: /^SQUASHFS error: /,
    fields: () => ({}),
  },
  {
    // A block of a sealed cache object that does not match its Merkle tree: the read got EIO.
    source: 'fsverity', kind: 'io-error', class: 'fsverity-corrupted',
    re: /^fs-verity \(([\w.:-]{1,64}), inode (\d{1,20})\): FILE CORRUPTED! (?:index=(\d{1,20})|pos=(\d{1,20}))/,
    fields: (m) => ({ device: m[1], inode: dec(m[2]), blockOffset: m[3] !== undefined ? mul(dec(m[3]), FSVERITY_PAGE_BYTES) : dec(m[4]) }),
  },
  {
    source: 'block', kind: 'io-error', class: 'block-io-error',
    // "I/O error, dev loop0, sector 8 op 0x0:(READ) …" or "blk_update_request: I/O error, dev sda, sector 8"
    // (block/blk-core.c blk_errors[]: "I/O", "critical medium", "timeout", "recoverable transport", …)
    re: /(?:^|: )(?:critical )?(?:I\/O|medium|target|nexus|space allocation|protection|timeout|recoverable transport) error, dev ([\w.:-]{1,64}), sector (\d{1,20})/,
    fields: (m) => ({ device: m[1], sector: dec(m[2]) }),
  },
  {
    source: 'block', kind: 'io-error', class: 'buffer-io-error',
    re: /^Buffer I\/O error on dev(?:ice)? ([\w.:-]{1,64}), logical block (\d{1,20})/,
    fields: (m) => ({ device: m[1], logicalBlock: dec(m[2]) }),
  },
  {
    source: 'ext4', kind: 'io-error', class: 'ext4-error',
    re: /^EXT4-fs error \(device ([\w.:-]{1,64})\)/,
    fields: (m) => ({ device: m[1] }),
  },
  {
    source: 'ext4', kind: 'io-error', class: 'ext4-error',
    re: /^EXT4-fs \(([\w.:-]{1,64})\): .*(?:I\/O error|error|corrupt)/i,
    maxLevel: 3,
    fields: (m) => ({ device: m[1] }),
  },
  {
    source: 'xfs', kind: 'io-error', class: 'xfs-error',
    re: /^XFS \(([\w.:-]{1,64})\): .*(?:I\/O error|corrupt|error)/i,
    fields: (m) => ({ device: m[1] }),
  },
  {
    source: 'xfs', kind: 'io-error', class: 'xfs-error',
    re: /^XFS \(([\w.:-]{1,64})\): /,
    maxLevel: 3,
    fields: (m) => ({ device: m[1] }),
  },
]

const DEVNUM = /^b(\d{1,10}):(\d{1,10})$/

/**
 * Classifies one record: a kernel error we report, or `undefined` (ignored:
 * not from the kernel, or not an error we know).
 */
export const classify = (record: KmsgRecord): ClassifiedError | undefined => {
  if (record.facility !== FACILITY_KERNEL) return undefined
  for (const rule of RULES) {
    if (rule.maxLevel !== undefined && record.level > rule.maxLevel) continue
    const m = rule.re.exec(record.message)
    if (!m) continue
    const out: ClassifiedError = { kind: rule.kind, class: rule.class, source: rule.source }
    for (const [k, v] of Object.entries(rule.fields(m))) if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v
    const dev = record.dict.DEVICE
    const dm = dev ? DEVNUM.exec(dev) : null
    if (dm) out.devnum = `${dm[1]}:${dm[2]}`
    return out
  }
  return undefined
}
