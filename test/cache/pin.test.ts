/**
 * Reading the kernel's loop table (agent/cache/pin.ts): which loop devices
 * are backed by which files. The table changes under the reader — any
 * program on the node may attach or detach a loop device at any moment — so
 * a device that vanishes mid-read is "not a backing", never an error that
 * fails an eviction, a `cache gc` or a repair. (CI caught it: an eviction
 * test failed with `ENODEV: no such device, read` while other tests freed
 * their loop devices.)
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readdir, readFile, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { loopsBacking, parseBackingFile, readLoopBackings } from '../../agent/cache/pin.js'
import { isErrno } from '../../agent/core/errors.js'
import { gate } from '../helpers/capability.js'

const exec = promisify(execFile)

t.test('parseBackingFile: the path, with the kernel\'s " (deleted)" taken off and said', async (t) => {
  t.same(parseBackingFile('loop3', '/cache/objects/ab/abcd\n'), { device: 'loop3', backingFile: '/cache/objects/ab/abcd', deleted: false })
  t.same(parseBackingFile('loop3', '/cache/objects/ab/abcd (deleted)\n'), { device: 'loop3', backingFile: '/cache/objects/ab/abcd', deleted: true })
  t.equal(parseBackingFile('loop3', '\n'), undefined, 'an empty attribute is no backing')
  t.equal(parseBackingFile('loop3', 'relative/path\n'), undefined, 'a path not from the root is no backing')
  const loops = [parseBackingFile('loop1', '/a (deleted)'), parseBackingFile('loop2', '/a')].filter((x) => x !== undefined)
  t.same(loopsBacking(loops, '/a').map((l) => l.device), ['loop2'], 'a deleted backing file is another inode')
})

t.test('readLoopBackings over a table: bound, unbound, vanished devices', async (t) => {
  const sys = t.testdir({
    loop0: { loop: { backing_file: '/srv/a.img\n' } },
    loop1: {},
    loop7: { loop: { backing_file: '/srv/b.img (deleted)\n' } },
    sda: { loop: { backing_file: '/not/a/loop\n' } },
  })
  t.same(
    (await readLoopBackings(sys)).map((b) => [b.device, b.backingFile, b.deleted]).sort(),
    [
      ['loop0', '/srv/a.img', false],
      ['loop7', '/srv/b.img', true],
    ],
    'only loopN devices with a backing file',
  )
  t.same(await readLoopBackings(join(sys, 'missing')), [], 'no /sys/block at all: no loop devices')
})

t.test('a device that answers ENXIO (gone) is not a backing; other errors still throw', gate('root'), async (t) => {
  const sys = t.testdir({ loop0: { loop: { backing_file: '/srv/a.img\n' } }, loop1: { loop: {} }, loop2: { loop: { backing_file: {} } } })
  // A character device of a major no driver holds: reading it is the kernel's ENXIO.
  await exec('mknod', [join(sys, 'loop1', 'loop', 'backing_file'), 'c', '240', '0'])
  await t.rejects(readFile(join(sys, 'loop1', 'loop', 'backing_file')), { code: 'ENXIO' }, 'the node reads as ENXIO')
  await t.rejects(readLoopBackings(sys), { code: 'EISDIR' }, 'an attribute that is a directory is not a vanished device: it throws')
  await exec('rm', ['-r', join(sys, 'loop2')])
  t.same((await readLoopBackings(sys)).map((b) => b.device), ['loop0'], 'the ENXIO device is skipped, the bound one kept')
})

t.test('real loop devices attached and detached while the table is read: never an error', gate('root', 'loop'), async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'churn.img')
  await writeFile(file, '')
  await truncate(file, 1 << 20)
  let stop = false
  let cycles = 0
  // The churn: our own device only, bounded (at most 300 cycles, 20 s).
  const churn = (async () => {
    const end = Date.now() + 20_000
    while (!stop && cycles < 300 && Date.now() < end) {
      const { stdout } = await exec('losetup', ['--find', '--show', file])
      await exec('losetup', ['-d', stdout.trim()])
      cycles++
    }
    stop = true
  })()
  let reads = 0
  let witnessENODEV = 0
  const failures: string[] = []
  try {
    while (!stop) {
      try {
        await readLoopBackings()
        reads++
      } catch (e) {
        failures.push(String(e))
      }
      // A raw read of the same table beside it: shows the race was there to be hit.
      for (const d of (await readdir('/sys/block')).filter((x) => /^loop\d+$/.test(x))) {
        await readFile(`/sys/block/${d}/loop/backing_file`).catch((e: unknown) => {
          if (isErrno(e, 'ENODEV')) witnessENODEV++
        })
      }
    }
  } finally {
    stop = true
    await churn
  }
  t.same(failures.slice(0, 3), [], `readLoopBackings never threw (${reads} reads during ${cycles} attach/detach cycles)`)
  t.ok(cycles > 0 && reads > 0, 'both sides ran')
  t.comment(`raw reads of the same table answered ENODEV ${witnessENODEV} time(s) meanwhile`)
})
