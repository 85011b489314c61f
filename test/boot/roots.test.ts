import t from 'tap'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parsePartitionSpec } from '../../agent/boot/cmdline.js'
import { openPartition } from '../../agent/boot/partitions.js'
import { planBoot, resolveIntent, type PartitionState } from '../../agent/boot/plan.js'
import { prepareRoot } from '../../agent/boot/roots.js'
import type { BootDescriptor } from '../../agent/boot/descriptor.js'
import { gate } from '../helpers/capability.js'
import { hashTree, makeOsTree, mksquashfs, mountsOf, scratch, uniqueLabel } from '../helpers/loop.js'

const realGate = gate('root', 'loop', 'squashfs-tools')
const desc = (style: BootDescriptor['style'], root: string | null): BootDescriptor => ({
  schema: 1,
  node: 'n1',
  style,
  image: { name: 'test-os', sha256: 'd'.repeat(64), size: 1, manifest: 'http://h/m' },
  partitions: { root: root ? parsePartitionSpec('root', root) : null, cache: null },
  // rootMode unpack: this file holds the unpacking executors; overlay mode is test/boot/overlay.test.ts.
  policies: { rootMode: 'unpack' },
})

const fixture = async (t: { teardown(fn: () => Promise<void>): void }) => {
  const s = await scratch(t)
  const tree = await makeOsTree(join(s.dir, 'tree'))
  const image = await mksquashfs(tree, join(s.dir, 'os.sqfs'))
  return { s, tree, image, runDir: join(s.dir, 'run'), sysroot: join(s.dir, 'sysroot') }
}

t.test('disked: the root partition holds exactly the image, lost+found kept, marker written, mounted at the sysroot', realGate, async (t) => {
  const { s, tree, image, runDir, sysroot } = await fixture(t)
  const label = uniqueLabel('bar')
  const disk = await s.disk({ sizeMiB: 64, label })
  const root = await openPartition(parsePartitionSpec('root', `LABEL=${label}`), { role: 'root', mountpoint: join(runDir, 'mnt', 'root'), deadlineMs: 1000, mayFormat: false })
  t.equal(root.state, 'mounted')
  await writeFile(join(runDir, 'mnt', 'root', 'left-from-last-boot'), 'x')
  const plan = planBoot(resolveIntent({}, desc('disked', `LABEL=${label}`), 'n1', 'http://h'), { cache: { state: 'unset' }, root })
  const r = await prepareRoot(plan, image, { runDir, sysroot })
  t.equal(r.init, '/sbin/init')
  t.same(await hashTree(sysroot), await hashTree(tree), 'sysroot files identical to the image tree')
  t.ok((await readdir(sysroot)).includes('lost+found'))
  t.notOk((await readdir(sysroot)).includes('left-from-last-boot'), 'the previous contents are gone')
  t.match(JSON.parse(await readFile(join(sysroot, '.boot-agent-image'), 'utf8')), { sha256: 'd'.repeat(64), style: 'disked' })
  t.same(await mountsOf(disk.device), [sysroot], 'only the sysroot mount remains')
})

t.test('rwram: a writable tmpfs root with the image tree', realGate, async (t) => {
  const { tree, image, runDir, sysroot } = await fixture(t)
  const plan = planBoot(resolveIntent({}, desc('rwram', null), 'n1', 'http://h'), { cache: { state: 'unset' }, root: { state: 'unset' } })
  await prepareRoot(plan, image, { runDir, sysroot })
  t.same(await hashTree(sysroot), await hashTree(tree))
  await writeFile(join(sysroot, 'etc', 'new'), 'writable')
  const { stdout } = await import('node:child_process').then((cp) => new Promise<{ stdout: string }>((res, rej) => cp.execFile('findmnt', ['-n', '-o', 'FSTYPE', sysroot], (e, so) => (e ? rej(e) : res({ stdout: so })))))
  t.equal(stdout.trim(), 'tmpfs')
})

t.test('roram: the image is loop-mounted read-only under a tmpfs overlay, and reads', realGate, async (t) => {
  const { tree, image, runDir, sysroot } = await fixture(t)
  const plan = planBoot(resolveIntent({}, desc('roram', null), 'n1', 'http://h'), { cache: { state: 'unset' }, root: { state: 'unset' } })
  const r = await prepareRoot(plan, image, { runDir, sysroot })
  t.equal(r.mounts.length, 3)
  t.equal(await readFile(join(sysroot, 'etc', 'hostname'), 'utf8'), 'compute\n')
  const want = await hashTree(tree)
  const got = await hashTree(sysroot)
  for (const k of Object.keys(want)) t.equal(got[k], want[k], k)
  await writeFile(join(sysroot, 'etc', 'hostname'), 'changed\n')
  t.equal(await readFile(join(runDir, 'mnt', 'roram-lower', 'etc', 'hostname'), 'utf8'), 'compute\n', 'the image itself is untouched')
  t.equal(await readFile(join(runDir, 'mnt', 'roram-rw', 'upper', 'etc', 'hostname'), 'utf8'), 'changed\n', 'writes land in the tmpfs upper')
})

t.test('a broken image fails rwram with no mount left behind', realGate, async (t) => {
  const { s, runDir, sysroot } = await fixture(t)
  const bad = join(s.dir, 'bad.sqfs')
  await writeFile(bad, Buffer.alloc(8192, 1))
  const plan = planBoot(resolveIntent({}, desc('rwram', null), 'n1', 'http://h'), { cache: { state: 'unset' }, root: { state: 'unset' } })
  await t.rejects(prepareRoot(plan, bad, { runDir, sysroot }), { code: 'EUNPACK' })
  const { stdout } = await import('node:child_process').then((cp) => new Promise<{ stdout: string }>((res) => cp.execFile('findmnt', ['-rn', '-o', 'TARGET'], (_e, so) => res({ stdout: so }))))
  t.notMatch(stdout, s.dir, 'nothing under the test dir is mounted')
  await mkdir(sysroot, { recursive: true })
  t.same(await readdir(sysroot), [])
})
