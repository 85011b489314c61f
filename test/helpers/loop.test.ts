import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { gate } from './capability.js'
import { loopDevicesUnder, mountsOf, scratch, uniqueLabel } from './loop.js'

t.test('scratch cleanup unmounts, detaches and deletes whatever the test left', gate('root', 'loop'), async (t) => {
  const s = await scratch({ teardown: () => undefined })
  const label = uniqueLabel('blt')
  t.ok(label.length <= 12, 'labels fit xfs (12) and ext4 (16)')
  const disk = await s.disk({ sizeMiB: 16, label })
  t.equal(execFileSync('blkid', ['-c', '/dev/null', '-o', 'value', '-s', 'LABEL', disk.device], { encoding: 'utf8' }).trim(), label, 'a real ext4 label')
  const mp = join(s.dir, 'm')
  await mkdir(mp)
  execFileSync('mount', [disk.device, mp])
  t.same(await mountsOf(disk.device), [mp])
  await s.cleanup()
  t.same(await mountsOf(disk.device), [])
  t.same(await loopDevicesUnder(s.dir), [])
  t.notOk(existsSync(s.dir))
})
