import t from 'tap'
import { mkdir, readFile, symlink, writeFile, chmod, readdir, open } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { findInit, measureImage, parseListing, resolveInRoot, unpackImage, wipeRoot, MARKER_FILE, UNPACK_QUEUE_MIB, writeMarker } from '../../agent/boot/unpack.js'
import { run } from '../../agent/core/exec.js'
import { gate } from '../helpers/capability.js'
import { hashTree, makeOsTree, mksquashfs, scratch } from '../helpers/loop.js'

const sq = gate('squashfs-tools')

t.test('the listing parser sums file sizes in blocks and counts entries', async (t) => {
  const m = parseListing(
    [
      'drwxr-xr-x 0/0                      63 2026-11-21 13:38 squashfs-root',
      'lrwxrwxrwx 0/0                      12 2026-11-21 13:38 squashfs-root/init -> ../sbin/init',
      '-rwxr-xr-x 0/0                      18 2026-11-21 13:38 squashfs-root/sbin/init',
      '-rw-r--r-- 0/0                 3000000 2026-11-21 13:38 squashfs-root/usr/bin/big',
      'crw-r--r-- 0/0                  1,  3 2026-11-21 13:38 squashfs-root/dev/null',
      'Parallel unsquashfs: Using 2 processors',
    ].join('\n'),
  )
  t.equal(m.entries, 5)
  t.equal(m.fileBytes, 3000018)
  t.equal(m.neededBytes, 4096 + 4096 + 4096 + Math.ceil(3000000 / 4096) * 4096)
})

t.test('a real image is measured from its own inode table', sq, async (t) => {
  const s = await scratch(t)
  const tree = await makeOsTree(join(s.dir, 'tree'), { extraBytes: 300_000 })
  const img = await mksquashfs(tree, join(s.dir, 'i.sqfs'))
  const m = await measureImage(img)
  t.ok(m.fileBytes >= 300_000 && m.neededBytes >= m.fileBytes, 'sizes cover the files')
  t.ok(m.entries >= 10)
  const garbage = join(s.dir, 'g.sqfs')
  await writeFile(garbage, Buffer.alloc(64 * 1024, 7))
  await t.rejects(measureImage(garbage), { code: 'EUNPACK' }, 'garbage is refused before anything is wiped')
})

t.test('wiping keeps lost+found and removes everything else', async (t) => {
  const d = t.testdir({ 'lost+found': { keep: 'x' }, etc: { a: 'b' }, f: 'x', '.hidden': 'y' })
  await wipeRoot(d)
  t.same(await readdir(d), ['lost+found'])
  t.same(await readdir(join(d, 'lost+found')), ['keep'])
})

t.test('unpacking into an existing directory gives exactly the image tree', sq, async (t) => {
  const s = await scratch(t)
  const tree = await makeOsTree(join(s.dir, 'tree'))
  const img = await mksquashfs(tree, join(s.dir, 'i.sqfs'))
  const root = join(s.dir, 'root')
  await mkdir(join(root, 'lost+found'), { recursive: true })
  await unpackImage(img, root)
  t.same(await hashTree(root), await hashTree(tree))
  t.same((await readdir(root)).includes('.boot-agent-unpack'), false, 'the staging dir is gone')
})

t.test('an image that breaks half-way through unpacking leaves the root empty', sq, async (t) => {
  const s = await scratch(t)
  const tree = await makeOsTree(join(s.dir, 'tree'))
  // Compressible data so the corruption lands in a compressed block (raw blocks carry no check).
  await writeFile(join(tree, 'usr', 'big.txt'), randomBytes(3_000_000).toString('base64'))
  const img = await mksquashfs(tree, join(s.dir, 'i.sqfs'), ['-comp', 'gzip'])
  const fh = await open(img, 'r+')
  await fh.write(Buffer.alloc(64 * 1024, 0), 0, 64 * 1024, 1_000_000)
  await fh.close()
  await measureImage(img) // the inode table (at the end) is intact: only the unpack can tell
  const root = join(s.dir, 'root')
  await mkdir(join(root, 'lost+found'), { recursive: true })
  await writeFile(join(root, 'old'), 'previous boot')
  await wipeRoot(root)
  await t.rejects(unpackImage(img, root), { code: 'EUNPACK', message: /root was emptied/ })
  t.same(await readdir(root), ['lost+found'], 'no half-unpacked root')
})

t.test('init is found through in-image symlinks, and never outside the root', async (t) => {
  const root = t.testdir({ sbin: {}, usr: { lib: { systemd: {} } }, outside: {} })
  t.equal(await findInit(root), undefined, 'no init')
  await writeFile(join(root, 'usr', 'lib', 'systemd', 'systemd'), '#!/bin/sh\n')
  t.equal(await findInit(root), undefined, 'not executable: not an init')
  await chmod(join(root, 'usr', 'lib', 'systemd', 'systemd'), 0o755)
  t.equal(await findInit(root), '/usr/lib/systemd/systemd')
  const r2 = t.testdir({ sbin: {}, bin: {} })
  // /sbin/init -> /bin/busybox (absolute: resolved inside the root, not on the host)
  await writeFile(join(r2, 'bin', 'busybox'), '#!/bin/sh\n')
  await chmod(join(r2, 'bin', 'busybox'), 0o755)
  await symlink('/bin/busybox', join(r2, 'sbin', 'init'))
  t.equal(await findInit(r2), '/sbin/init')
  // an escape: /init -> ../../../../../bin/sh stays inside the root (where there is no bin/sh)
  const r3 = t.testdir({})
  await symlink('../../../../../../bin/sh', join(r3, 'init'))
  t.equal(await resolveInRoot(r3, '/init'), undefined)
  t.equal(await findInit(r3), undefined, 'the host /bin/sh is not taken for the image init')
  const r4 = t.testdir({})
  await symlink('init', join(r4, 'init'))
  t.equal(await findInit(r4), undefined, 'a symlink loop is no init')
})

t.test('the marker records the digest and time', async (t) => {
  const d = t.testdir({})
  await writeMarker(d, { sha256: 'c'.repeat(64), name: 'img', size: 1, unpackedAt: '2026-01-01T00:00:00.000Z', style: 'disked' })
  t.match(JSON.parse(await readFile(join(d, MARKER_FILE), 'utf8')), { sha256: 'c'.repeat(64), unpackedAt: '2026-01-01T00:00:00.000Z' })
})

t.test('unsquashfs runs with bounded queues (not 256 MiB each) and still gives the exact tree', sq, async (t) => {
  const s = await scratch(t)
  const tree = await makeOsTree(join(s.dir, 'tree'))
  const img = await mksquashfs(tree, join(s.dir, 'i.sqfs'))
  const root = join(s.dir, 'root')
  await mkdir(root, { recursive: true })
  const calls: string[][] = []
  await unpackImage(img, root, { run: (cmd, args, opts) => (calls.push([cmd, ...args]), run(cmd, args, opts)) })
  const args = calls.find((c) => c.includes('-d'))
  t.ok(args, 'unsquashfs was run')
  const q = (flag: string): number => Number(args?.[args.indexOf(flag) + 1])
  t.equal(q('-da'), UNPACK_QUEUE_MIB, 'data queue')
  t.equal(q('-fr'), UNPACK_QUEUE_MIB, 'fragment queue')
  t.same(await hashTree(root), await hashTree(tree))
})
