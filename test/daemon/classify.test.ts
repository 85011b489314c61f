import t from 'tap'
import { classify } from '../../agent/daemon/classify.js'
import type { KmsgRecord } from '../../agent/daemon/kmsg.js'

const rec = (message: string, over: Partial<KmsgRecord> = {}): KmsgRecord => ({
  facility: 0, level: 3, seq: 1, usec: 1, flags: '-', message, dict: {}, ...over,
})

t.test('squashfs variants as this kernel prints them are classified with their block offsets', async (t) => {
  t.match(classify(rec('SQUASHFS error: xz decompression failed, data probably corrupt')), { kind: 'squashfs-error', class: 'decompression-failed', compressor: 'xz' })
  t.match(classify(rec('SQUASHFS error: zstd decompression failed, data probably corrupt')), { class: 'decompression-failed', compressor: 'zstd' })
  t.match(classify(rec('SQUASHFS error: Failed to read block 0x18b44: -5')), { class: 'read-block-failed', blockOffset: 0x18b44, errno: -5 })
  t.match(classify(rec('SQUASHFS error: Unable to read data cache entry [18b44]')), { class: 'unable-to-read-cache-entry', blockOffset: 0x18b44 })
  t.match(classify(rec('SQUASHFS error: Unable to read fragment cache entry [2a0]')), { class: 'unable-to-read-cache-entry', blockOffset: 0x2a0 })
  t.match(classify(rec('SQUASHFS error: Unable to read metadata cache entry [60]')), { class: 'unable-to-read-cache-entry', blockOffset: 0x60 })
  t.match(classify(rec('SQUASHFS error: Unable to read page, block 18b44, size 18b34')), { class: 'unable-to-read-page', blockOffset: 0x18b44, blockSize: 0x18b34 })
  t.match(classify(rec('SQUASHFS error: Unable to read inode 0x1234')), { kind: 'squashfs-error', class: 'other' })
})

t.test('block-layer, ext4 and xfs errors name their device and block', async (t) => {
  t.match(classify(rec('I/O error, dev loop0, sector 2048 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2')), { kind: 'io-error', class: 'block-io-error', device: 'loop0', sector: 2048 })
  t.match(classify(rec('blk_update_request: I/O error, dev sda, sector 1234')), { class: 'block-io-error', device: 'sda', sector: 1234 })
  t.match(classify(rec('critical medium error, dev sdb, sector 99 op 0x0:(READ)')), { class: 'block-io-error', device: 'sdb', sector: 99 })
  t.match(classify(rec('Buffer I/O error on dev sda1, logical block 123, async page read')), { class: 'buffer-io-error', device: 'sda1', logicalBlock: 123 })
  t.match(classify(rec('EXT4-fs error (device sda2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0')), { class: 'ext4-error', device: 'sda2', source: 'ext4' })
  t.match(classify(rec('XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0x1a/0x2b0, inode 0x83')), { class: 'xfs-error', device: 'sdb1' })
})

t.test('the DEVICE= dictionary entry becomes the device number', async (t) => {
  t.match(classify(rec('SQUASHFS error: Failed to read block 0x10: -5', { dict: { SUBSYSTEM: 'block', DEVICE: 'b7:3' } })), { devnum: '7:3' })
})

t.test('records not from the kernel facility are never kernel errors', async (t) => {
  t.equal(classify(rec('SQUASHFS error: xz decompression failed, data probably corrupt', { facility: 1 })), undefined)
  t.equal(classify(rec('I/O error, dev sda, sector 1', { facility: 3 })), undefined)
})

t.test('informational kernel lines are ignored', async (t) => {
  t.equal(classify(rec('EXT4-fs (vda): mounted filesystem 0000 r/w without journal.', { level: 6 })), undefined)
  t.equal(classify(rec('loop0: detected capacity change from 0 to 4896', { level: 6 })), undefined)
  t.equal(classify(rec('squashfs: version 4.0 (2009/01/31) Phillip Lougher', { level: 6 })), undefined)
})

t.test('fs-verity corruption records: the device, the sealed file\'s inode and the byte offset', async (t) => {
  // Recorded lines: this machine's kernel has no fs-verity and cannot print them. The first as the
  // Debian 12 kernel (6.1) printed it in test/vm/overlay.test.ts (`index` is the data page); the
  // second in the 6.3+ form (`pos`, bytes; fs/verity/verify.c).
  const real = 'fs-verity (vda1, inode 15): FILE CORRUPTED! index=15923, level=-1, want_hash=sha256:cd6358b50986c2e46e1413baca3a31bdbc546e756e6793ee94c767536749c39e, real_hash=sha256:00fa0e972e0c874bf58c1deb25fbcbdd17344d4396f622c8c2fb0433eb8fcff0'
  t.match(classify(rec(real)), { kind: 'io-error', class: 'fsverity-corrupted', source: 'fsverity', device: 'vda1', inode: 15, blockOffset: 15923 * 4096 })
  const hash = 'sha256:' + '0'.repeat(64)
  t.match(classify(rec(`fs-verity (sda1, inode 5): FILE CORRUPTED! pos=163840, level=1, want_hash=${hash}, real_hash=${hash}`)), { device: 'sda1', inode: 5, blockOffset: 163840 })
  t.equal(classify(rec('fs-verity (vdb2, inode 12): FILE CORRUPTED! index=1', { facility: 1 })), undefined, 'not from the kernel: ignored')
})
