import t from 'tap'
import { mkdir, writeFile, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { findDevices, openPartition, removableInfo, resolvePartition, assertFormattable } from '../../agent/boot/partitions.js'
import type { Runner } from '../../agent/core/exec.js'
import { gate } from '../helpers/capability.js'
import { mountsOf, scratch, uniqueLabel } from '../helpers/loop.js'
import { parsePartitionSpec } from '../../agent/boot/cmdline.js'

const spec = (s: string) => {
  const p = parsePartitionSpec('test', s)
  if (!p) throw new Error('none')
  return p
}
const realGate = gate('root', 'loop')

t.test('a LABEL= spec resolves to the one loop device carrying that real ext4 label', realGate, async (t) => {
  const label = uniqueLabel('bap')
  const s = await scratch(t)
  const disk = await s.disk({ sizeMiB: 16, label })
  t.same(await resolvePartition(spec(`LABEL=${label}`), 2000), { state: 'found', device: disk.device })
  t.same(await resolvePartition(spec(disk.device), 0), { state: 'found', device: disk.device }, 'a device path resolves to itself')
})

t.test('a label nobody carries is missing after the deadline, with the reason', realGate, async (t) => {
  const r = await resolvePartition(spec(`LABEL=${uniqueLabel('none')}`), 300)
  t.equal(r.state, 'missing')
  t.match(r.state === 'missing' ? r.reason : '', /within 300 ms/)
})

t.test('a device that appears while we wait is found (the udev race)', async (t) => {
  let looks = 0
  // Scripted blkid: nothing twice, then the device; the real blkid is used in the tests above.
  const run: Runner = async () => {
    looks++
    return looks < 3 ? { exitCode: 2, signal: null, stdout: '', stderr: '' } : { exitCode: 0, signal: null, stdout: '/dev/vdz1\n', stderr: '' }
  }
  const r = await resolvePartition(spec('LABEL=late'), 5000, { run, sleep: async () => {} })
  t.same(r, { state: 'found', device: '/dev/vdz1' })
  t.equal(looks, 3)
})

t.test('two devices with the same label are refused, never guessed', realGate, async (t) => {
  const label = uniqueLabel('bad')
  const s = await scratch(t)
  const a = await s.disk({ sizeMiB: 16, label })
  const b = await s.disk({ sizeMiB: 16, label })
  const r = await resolvePartition(spec(`LABEL=${label}`), 0)
  t.equal(r.state, 'ambiguous')
  t.same(await findDevices(spec(`LABEL=${label}`)), [a.device, b.device].sort())
  const st = await openPartition(spec(`LABEL=${label}`), { role: 'cache', mountpoint: join(s.dir, 'm'), deadlineMs: 0, mayFormat: true })
  t.equal(st.state, 'unusable')
  t.match(st.state === 'unusable' ? st.reason : '', /refusing to guess/)
})

t.test('ext4 and xfs partitions mount and report their space', realGate, async (t) => {
  const s = await scratch(t)
  for (const fs of ['ext4', 'xfs'] as const) {
    const label = uniqueLabel(fs === 'xfs' ? 'bx' : 'be')
    const disk = await s.disk({ sizeMiB: 320, fs, label })
    const mp = join(s.dir, `m-${fs}`)
    const st = await openPartition(spec(`LABEL=${label}`), { role: 'root', mountpoint: mp, deadlineMs: 1000, mayFormat: false })
    t.match(st, { state: 'mounted', device: disk.device, fstype: fs, mountpoint: mp })
    t.ok(st.state === 'mounted' && st.capacityBytes > 200 * 1024 * 1024 && st.freeBytes > 0, `${fs} capacity reported`)
    t.same(await mountsOf(disk.device), [mp])
  }
})

t.test('a partition without a filesystem is unusable unless format allows it', realGate, async (t) => {
  const s = await scratch(t)
  const disk = await s.disk({ sizeMiB: 16, fs: null })
  const mp = join(s.dir, 'm')
  const no = await openPartition(spec(disk.device), { role: 'cache', mountpoint: mp, deadlineMs: 0, mayFormat: false })
  t.equal(no.state, 'unusable')
  t.match(no.state === 'unusable' ? no.reason : '', /rd.bootagent.format/)
  const yes = await openPartition(spec(disk.device), { role: 'cache', mountpoint: mp, deadlineMs: 0, mayFormat: true })
  t.match(yes, { state: 'mounted', fstype: 'ext4' }, 'formatted as ext4 and mounted')
})

t.test('removable and USB disks are never formatted (sysfs checked through the partition to its disk)', async (t) => {
  // A fake sysfs tree: this machine has no USB or removable disk to format. The real
  // /sys/class/block is used for the loop-device test above.
  const dir = t.testdir()
  const dev = join(dir, 'devices')
  const usbDisk = join(dev, 'pci0000:00', 'usb1', '1-1', 'block', 'sdb')
  const rmDisk = join(dev, 'pci0000:00', 'ata1', 'block', 'sdc')
  const fixed = join(dev, 'pci0000:00', 'ata2', 'block', 'sdd')
  for (const [d, removable] of [[usbDisk, '0'], [rmDisk, '1'], [fixed, '0']] as const) {
    await mkdir(join(d, `${d.slice(-3)}1`), { recursive: true })
    await writeFile(join(d, 'removable'), `${removable}\n`)
    await writeFile(join(d, `${d.slice(-3)}1`, 'partition'), '1\n')
  }
  const cls = join(dir, 'class')
  await mkdir(cls)
  await symlink(join(usbDisk, 'sdb1'), join(cls, 'sdb1'))
  await symlink(join(rmDisk, 'sdc1'), join(cls, 'sdc1'))
  await symlink(join(fixed, 'sdd1'), join(cls, 'sdd1'))
  t.match(await removableInfo('/dev/sdb1', { sysClassBlock: cls }), { usb: true, disk: 'sdb' })
  t.match(await removableInfo('/dev/sdc1', { sysClassBlock: cls }), { removable: true, usb: false, disk: 'sdc' })
  await t.rejects(assertFormattable('/dev/sdb1', { sysClassBlock: cls }), { code: 'EFORMAT', message: /on USB/ })
  await t.rejects(assertFormattable('/dev/sdc1', { sysClassBlock: cls }), { code: 'EFORMAT', message: /removable/ })
  await t.resolves(assertFormattable('/dev/sdd1', { sysClassBlock: cls }))
})

t.test('mkfs.ext4 gets -O verity only when asked (the cache, on a kernel with ext4 fs-verity), the label either way', async (t) => {
  const { mkfsArgs, kernelHasExt4Verity } = await import('../../agent/boot/partitions.js')
  const spec = { kind: 'label' as const, value: 'cwcache', text: 'LABEL=cwcache' }
  t.same(mkfsArgs('/dev/vdb1', spec, { verity: true }), ['-q', '-F', '-L', 'cwcache', '-O', 'verity', '-b', '4096', '/dev/vdb1'])
  t.same(mkfsArgs('/dev/vdb1', spec), ['-q', '-F', '-L', 'cwcache', '/dev/vdb1'])
  t.type(await kernelHasExt4Verity(), 'boolean', 'read from /sys/fs/ext4/features')
})
