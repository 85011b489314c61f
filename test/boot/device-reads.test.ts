/**
 * The bytes a boot read from the cache device while checking the image
 * (agent/boot/device-reads.ts): the kernel's /sys/class/block/<dev>/stat,
 * read before and after. On this machine's real block devices, and on a
 * scripted stat file for the arithmetic.
 */
import t from 'tap'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseSectorsRead, startReadCounter, STAT_SECTOR_BYTES, verificationName } from '../../agent/boot/device-reads.js'

t.test('sectors read is the third field of a block device\'s stat file (this machine\'s own devices)', async (t) => {
  const devs = (await readdir('/sys/class/block').catch(() => [] as string[])).filter((d) => !d.startsWith('loop'))
  if (devs.length === 0) {
    t.comment('no block devices in /sys/class/block')
    return
  }
  for (const d of devs.slice(0, 3)) {
    const text = await readFile(join('/sys/class/block', d, 'stat'), 'utf8')
    t.equal(parseSectorsRead(text), Number(text.trim().split(/\s+/)[2]), `${d}: ${text.trim().split(/\s+/).slice(0, 4).join(' ')} …`)
  }
  t.equal(parseSectorsRead('garbage'), undefined)
  const counter = await startReadCounter(`/dev/${devs[0]}`)
  t.type(await counter.stop(), 'number', 'a real device: a count')
})

t.test('the counter: the sectors read between start and stop, in bytes; unknown when the device has no stat file', async (t) => {
  const sys = t.testdir()
  await mkdir(join(sys, 'vdb2'))
  const stat = (read: number): string => `  120 0 ${read} 300 5 0 40 2 0 210 302 0 0 0 0 0 0\n`
  await writeFile(join(sys, 'vdb2', 'stat'), stat(1000))
  const c = await startReadCounter('/dev/vdb2', sys)
  await writeFile(join(sys, 'vdb2', 'stat'), stat(1024))
  t.equal(await c.stop(), 24 * STAT_SECTOR_BYTES, '24 sectors of 512 bytes')
  t.equal(await (await startReadCounter('/dev/nvme9n1p1', sys)).stop(), undefined)
})

t.test('which check made the image usable, in words', async (t) => {
  t.equal(verificationName(true, 'manifest-fsverity'), 'measured fs-verity')
  t.equal(verificationName(true, 'manifest-xxh64'), 'fast verify')
  t.equal(verificationName(true, 'manifest-sha256'), 'strong verify')
  t.match(verificationName(false, 'download'), /^download/)
})
