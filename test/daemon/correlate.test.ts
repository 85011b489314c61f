/**
 * The correlation rules on a scripted /sys and mountinfo (system paths
 * relocated with BOOT_AGENT_* variables): which loop device a squashfs error
 * came from when the message names none, and what an error on the root
 * partition is tied to. real-kernel.test.ts checks the same on the real
 * kernel with one loop mount.
 */
import t from 'tap'
import { mkdir, symlink, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ClassifiedError } from '../../agent/daemon/classify.js'

const root = t.testdir()
process.env.BOOT_AGENT_SYS_BLOCK = join(root, 'sys', 'block')
process.env.BOOT_AGENT_SYS_DEV_BLOCK = join(root, 'sys', 'dev', 'block')
process.env.BOOT_AGENT_PROC_MOUNTINFO = join(root, 'mountinfo')
const { Correlator, parseSquashfsMounts } = await import('../../agent/daemon/correlate.js')

const cache = join(root, 'cache')
const shaA = 'a1'.repeat(32)
const shaB = 'b2'.repeat(32)
const objA = join(cache, 'objects', 'sha256', shaA.slice(0, 2), shaA.slice(2))
const objB = join(cache, 'objects', 'sha256', shaB.slice(0, 2), shaB.slice(2))
const foreign = join(root, 'elsewhere.sqfs')

const loop = async (n: number, backing: string, size: number): Promise<void> => {
  await mkdir(join(root, 'sys', 'block', `loop${n}`, 'loop'), { recursive: true })
  await writeFile(join(root, 'sys', 'block', `loop${n}`, 'loop', 'backing_file'), `${backing}\n`)
  await truncate(backing, size)
}
const mounts = async (...devs: string[]): Promise<void> => {
  const lines = devs.map((d, i) => `${30 + i} 1 7:${i} / /mnt/m${i} ro,relatime shared:${i} - squashfs /dev/${d} ro,errors=continue`)
  await writeFile(join(root, 'mountinfo'), ['22 1 253:1 / / rw,relatime - ext4 /dev/vda rw', ...lines].join('\n') + '\n')
}

await mkdir(join(cache, 'objects', 'sha256', shaA.slice(0, 2)), { recursive: true })
await mkdir(join(cache, 'objects', 'sha256', shaB.slice(0, 2)), { recursive: true })
await writeFile(`${objA}.meta.json`, JSON.stringify({ size: 1, sha256: shaA, chunks: [], names: ['old-name', 'CPE-base'] }))
await writeFile(objA, '')
await writeFile(objB, '')
await writeFile(foreign, '')
await loop(3, objA, 4 << 20)
await loop(4, foreign, 8 << 20)
await loop(5, objB, 1 << 20)
await mkdir(join(root, 'sys', 'dev', 'block'), { recursive: true })
await symlink('../../devices/virtual/block/loop5', join(root, 'sys', 'dev', 'block', '7:5'))

const sqErr = (more: Partial<ClassifiedError> = {}): ClassifiedError => ({ kind: 'squashfs-error', class: 'decompression-failed', source: 'squashfs', ...more })

t.test('mountinfo parsing keeps only squashfs mounted from a device', async (t) => {
  t.same(parseSquashfsMounts('1 2 7:0 / /a ro - squashfs /dev/loop0 ro\n1 2 0:5 / /b rw - squashfs overlay rw\n1 2 8:1 / / rw - ext4 /dev/sda1 rw\n'), [{ device: 'loop0' }])
})

t.test('one squashfs loop mounted: it is the device, its backing object names the image', async (t) => {
  await mounts('loop3')
  const c = await new Correlator({ cacheDirs: [cache] }).correlate(sqErr())
  t.match(c, { rule: 'single-squashfs-loop', device: 'loop3', backingFile: objA, object: { sha256: shaA }, image: { sha256: shaA, name: 'CPE-base' }, role: 'image' })
})

t.test('several mounted: the one backed by an object of this node\'s cache', async (t) => {
  await mounts('loop4', 'loop3')
  t.match(await new Correlator({ cacheDirs: [cache] }).correlate(sqErr()), { rule: 'cached-squashfs-loop', device: 'loop3' })
})

t.test('several cached: the block offset rules out images too small to hold it', async (t) => {
  await mounts('loop3', 'loop5')
  t.match(await new Correlator({ cacheDirs: [cache] }).correlate(sqErr({ blockOffset: 2 << 20 })), { rule: 'offset-fits', device: 'loop3' })
})

t.test('still several: ambiguous, with every candidate and its object', async (t) => {
  await mounts('loop3', 'loop5')
  const c = await new Correlator({ cacheDirs: [cache] }).correlate(sqErr({ blockOffset: 10 }))
  t.equal(c.rule, 'ambiguous')
  t.equal(c.device, undefined)
  t.same(c.candidates?.map((x) => [x.device, x.object?.sha256]), [['loop3', shaA], ['loop5', shaB]])
})

t.test('the DEVICE= dictionary wins over any guess', async (t) => {
  await mounts('loop3', 'loop5')
  t.match(await new Correlator({ cacheDirs: [cache] }).correlate(sqErr({ devnum: '7:5' })), { rule: 'dictionary', device: 'loop5', object: { sha256: shaB } })
})

t.test('an I/O error on the unpacked root partition carries the booted image', async (t) => {
  const bootRecord = { fallbacks: [], problems: [], image: { name: 'CPE-base', sha256: shaA }, root: { device: '/dev/sda2' }, cache: { device: '/dev/sda1' } }
  const c = new Correlator({ bootRecord })
  t.match(await c.correlate({ kind: 'io-error', class: 'ext4-error', source: 'ext4', device: 'sda2' }), { rule: 'message', device: 'sda2', role: 'root', image: { name: 'CPE-base', sha256: shaA } })
  const onCache = await c.correlate({ kind: 'io-error', class: 'block-io-error', source: 'block', device: 'sda1', sector: 8 })
  t.match(onCache, { role: 'cache' })
  t.equal(onCache.image, undefined)
})

t.test('objects outside this node\'s cache dirs are not taken for its images', async (t) => {
  await mounts('loop3')
  const c = await new Correlator({ cacheDirs: [join(root, 'other-cache')] }).correlate(sqErr())
  t.equal(c.device, 'loop3')
  t.equal(c.object, undefined)
})

t.test('an fs-verity record (device + inode) is tied to the sealed object with that inode on that device, whether a loop reads it or the boot record names it', async (t) => {
  const { devnumOf } = await import('../../agent/daemon/correlate.js')
  const { stat } = await import('node:fs/promises')
  // The files are real (their inode and device are); the device's name comes from the scripted /sys/dev/block.
  const st = await stat(objB)
  await symlink('../../devices/pci0000:00/block/vdb/vdb2', join(root, 'sys', 'dev', 'block', devnumOf(st.dev)))
  const verity = (inode: number, device = 'vdb2'): ClassifiedError => ({ kind: 'io-error', class: 'fsverity-corrupted', source: 'fsverity', device, inode, blockOffset: 40 * 4096 })
  const c = new Correlator({ cacheDirs: [cache] })
  t.match(await c.correlate(verity(st.ino)), { rule: 'inode', device: 'vdb2', backingFile: objB, object: { sha256: shaB }, image: { sha256: shaB }, role: 'image' }, 'the loop device\'s backing file')
  const bootRecord = { fallbacks: [], problems: [], image: { name: 'CPE-base', sha256: shaA }, cache: { device: '/dev/vdb2', objectPath: objA } }
  t.match(await new Correlator({ bootRecord }).correlate(verity((await stat(objA)).ino)), { rule: 'inode', object: { sha256: shaA }, image: { name: 'CPE-base', sha256: shaA } }, 'the booted object')
  t.match(await c.correlate(verity(st.ino, 'vdc1')), { rule: 'message', device: 'vdc1' }, 'the same inode number on another device is not it')
  t.equal((await c.correlate(verity(st.ino, 'vdc1'))).object, undefined)
  t.equal(devnumOf(0x10302), '259:2', 'dev_t: major in bits 8–19 and 32+, minor in 0–7 and 20+')
  t.equal(devnumOf((0x1 << 20) | (0x8 << 8) | 0x5), '8:261')
})
