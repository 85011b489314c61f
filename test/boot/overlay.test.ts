/**
 * disked's root modes on real parts (issue #19): loop devices with real ext4
 * labels, a real squashfs, a real nginx serving the head's files, the real
 * cache, real overlayfs. Each boot is followed by a simulated reboot (every
 * mount of the test undone, the run directory emptied).
 */
import t, { type Test } from 'tap'
import { chmod, lstat, mkdir, readdir, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { runBootStage, type StageOutcome } from '../../agent/boot/stage.js'
import { LAYERS_DIR, newLayerId, planTrash, TRASH_DIR } from '../../agent/boot/overlay.js'
import { emptyTrash } from '../../agent/daemon/trash.js'
import { formatMountChain, readMountChain } from '../../agent/daemon/mount-chain.js'
import { Cache } from '../../agent/cache/store.js'
import { demoteToPartial } from '../../agent/cache/partial.js'
import { runCli } from '../helpers/run-cli.js'
import { run as realRun, type Runner } from '../../agent/core/exec.js'
import { silentLogger } from '../../agent/core/log.js'
import { gate } from '../helpers/capability.js'
import { hashTree, makeOsTree, mksquashfs, scratch, unmountUnder, uniqueLabel } from '../helpers/loop.js'
import { startNginx } from '../helpers/nginx.js'
import { publishStatic } from '../helpers/static-head.js'

const realGate = gate('root', 'loop', 'squashfs-tools', 'nginx')

/** One node: a cache and a root disk, nginx as the head, an image published for disked. */
const node = async (t: Test) => {
  const s = await scratch(t, 'ba-ovl-')
  const www = join(s.dir, 'www')
  const nginx = await startNginx(www)
  t.teardown(() => nginx.stop())
  const cacheLabel = uniqueLabel('boc')
  const rootLabel = uniqueLabel('bor')
  await s.disk({ sizeMiB: 64, label: cacheLabel })
  await s.disk({ sizeMiB: 64, label: rootLabel })
  const runDir = join(s.dir, 'run')
  const sysroot = join(s.dir, 'sysroot')
  const tree = await makeOsTree(join(s.dir, 'tree'))
  const img = await mksquashfs(tree, join(s.dir, 'os.sqfs'))
  const pub = await publishStatic({ root: www, server: nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${cacheLabel}`, root: `LABEL=${rootLabel}` } })
  const line = `rd.bootagent.server=${nginx.url} rd.bootagent.node=n1 rd.bootagent.devtimeout=1 rd.bootagent.rebootdelay=0`
  return {
    s,
    cacheLabel,
    runDir,
    sysroot,
    tree,
    pub,
    /** The root partition as the stage left it mounted (overlay mode). */
    rootMount: join(runDir, 'mnt', 'root'),
    boot: async (extra = ''): Promise<StageOutcome> => {
      const r = await runBootStage({ cmdline: parseBootCmdline(`${line} ${extra}`), runDir, sysroot, pipeline: cachePipeline, log: silentLogger(), sleep: async () => {} })
      if (r.exitCode !== 0) throw new Error(`boot failed: ${r.record.error?.message}`)
      return r
    },
    /** The sysroot first (it holds the lower and the root partition), then the work mounts. */
    reboot: async (): Promise<void> => {
      await unmountUnder(sysroot)
      await unmountUnder(runDir)
      await rm(runDir, { recursive: true, force: true })
    },
  }
}

/** Every kind of change an admin or a job makes to a running root. */
const changeEverything = async (root: string): Promise<void> => {
  await writeFile(join(root, 'etc', 'written-in-boot-n'), 'new\n')
  await unlink(join(root, 'etc', 'hostname'))
  await chmod(join(root, 'sbin', 'init'), 0o700)
  // mv: overlayfs answers a rename of a lower directory with EXDEV (no redirect_dir) and mv copies, as any tool would.
  await realRun('mv', [join(root, 'usr', 'share', 'doc'), join(root, 'usr', 'share', 'doc-renamed')])
  await unlink(join(root, 'etc', 'os-release'))
  await symlink('/etc/passwd', join(root, 'etc', 'os-release'))
}

t.test('what goes to the trash: every other upper and work, and a tree an unpack boot left, never lost+found or this boot', async (t) => {
  const id = newLayerId(new Date('2026-12-07T19:00:00.123Z'))
  t.match(id, /^20261207T190000Z-[0-9a-f]{8}$/, 'sortable by time, unique by its random part')
  t.not(newLayerId(), newLayerId())
  const p = planTrash(['upper-a', 'work-a', `upper-${id}`, `work-${id}`, 'trash', 'other'], ['lost+found', '.boot-agent', 'usr', '.boot-agent-image'], id)
  t.same(p.moves, [
    { dir: 'layers', from: 'upper-a', to: 'upper-a' },
    { dir: 'layers', from: 'work-a', to: 'work-a' },
    { dir: 'top', from: '.boot-agent-image', to: `tree-${id}/.boot-agent-image` },
    { dir: 'top', from: 'usr', to: `tree-${id}/usr` },
  ])
  t.same(planTrash([], ['lost+found', '.boot-agent'], id), { moves: [] }, 'a clean partition: nothing to move')
})

for (const mode of ['overlay', 'unpack'] as const) {
  t.test(`rootmode=${mode}: a file written, one deleted, one chmod-ed, a directory renamed, a file replaced by a symlink in boot N → all pristine in boot N+1`, realGate, async (t) => {
    const n = await node(t)
    const want = await hashTree(n.tree)
    const first = await n.boot(`rd.bootagent.rootmode=${mode}`)
    t.match(first.record.root, { mode }, 'the record says which mode ran')
    t.same(await hashTree(n.sysroot), want, 'boot N: the image tree')
    await changeEverything(n.sysroot)
    t.notSame(await hashTree(n.sysroot), want, 'the changes are there while boot N runs')
    await n.reboot()
    const second = await n.boot(`rd.bootagent.rootmode=${mode}`)
    t.match(second.record, { cache: { hit: true }, root: { mode } })
    // This machine's kernel has no fs-verity: the cache cannot seal, the record says why, and the hit was read (issue #19).
    t.match(first.record.cache, { verification: /^download/, sealed: /^not sealed: (the cache filesystem has no fs-verity|no fsverity tool)/ }, 'boot N: not sealed here, and why')
    t.match(second.record.cache, { verification: 'fast verify', verifiedBy: 'manifest-xxh64' }, 'boot N+1: a fast verify, not a measurement')
    t.type(second.record.cache.bytesReadVerifying, 'number', `bytes read from the cache's loop device while verifying: ${second.record.cache.bytesReadVerifying}`)
    t.same(await hashTree(n.sysroot), want, 'boot N+1: exactly the image tree again')
    if (mode === 'overlay') {
      const { stdout } = await realRun('findmnt', ['-n', '-o', 'FSTYPE', n.sysroot])
      t.equal(stdout.trim(), 'overlay', 'the root is an overlay')
      t.notOk('measure' in second.record.timings, 'the image is not measured (nothing is unpacked)')
      for (const k of ['root.loop', 'root.check', 'root.trash', 'root.overlay']) t.type(second.record.timings[k], 'number', `timing ${k}`)
      t.equal(second.record.root.trashed, 2, "boot N's upper and work were renamed into the trash")
      t.same(await readdir(join(second.record.root.trash ?? '', first.record.root.upper?.split('/').at(-1) ?? '', 'etc')).then((l) => l.includes('written-in-boot-n')), true, "boot N's changes are in the trash, not in the root")
    } else {
      t.ok('root.unsquashfs' in second.record.timings, 'unpack mode still unpacks')
    }
  })
}

t.test('an overlay boot after an unpack boot: the unpacked tree goes to the trash whole, the root shows the image only', realGate, async (t) => {
  const n = await node(t)
  await n.boot('rd.bootagent.rootmode=unpack')
  await writeFile(join(n.sysroot, 'etc', 'left-by-unpack-boot'), 'x')
  await n.reboot()
  const r = await n.boot('rd.bootagent.rootmode=overlay')
  t.same(await hashTree(n.sysroot), await hashTree(n.tree))
  const top = (await readdir(n.rootMount)).sort()
  t.same(top, ['.boot-agent', 'lost+found'], 'nothing of the unpacked tree is left at the top of the root partition')
  const trash = await readdir(r.record.root.trash ?? '')
  t.equal(trash.filter((e) => e.startsWith('tree-')).length, 1, 'the tree is one entry of the trash')
})

t.test('twenty overlay boots in a row: each root is the image alone, and once the daemon has run no old upper is left', realGate, async (t) => {
  const n = await node(t)
  const want = await hashTree(n.tree)
  let last: StageOutcome | undefined
  for (let i = 0; i < 20; i++) {
    last = await n.boot('rd.bootagent.rootmode=overlay')
    const root = await hashTree(n.sysroot)
    if (JSON.stringify(root) !== JSON.stringify(want)) t.fail(`boot ${i}: the root is not the image tree`)
    await writeFile(join(n.sysroot, 'etc', `boot-${i}`), String(i))
    if (i < 19) await n.reboot()
  }
  const rec = last!.record.root
  const trash = rec.trash ?? ''
  t.equal((await readdir(trash)).length, 38, '19 earlier boots × (upper, work) wait in the trash')
  const r = await emptyTrash(trash, { log: silentLogger() })
  t.same(r, { deleted: 38, failed: 0, left: 0 })
  const layers = (await readdir(join(n.rootMount, LAYERS_DIR))).sort()
  t.same(layers, [rec.upper?.split('/').at(-1), TRASH_DIR, `work-${rec.upper?.split('/').at(-1)?.slice('upper-'.length)}`].sort(), 'only this boot\'s layers and an empty trash')
  t.same(await readdir(join(n.sysroot, 'etc')).then((l) => l.filter((x) => x.startsWith('boot-'))), ['boot-19'], 'the running root has only its own change')
  await n.reboot()
})

t.test('the object under a running overlay root is pinned: eviction, cache gc, removal and repair refuse it, saying why; status shows the mount chain', realGate, async (t) => {
  const n = await node(t)
  const r = await n.boot('rd.bootagent.rootmode=overlay')
  const cacheDir = join(n.runDir, 'cache')
  const object = r.record.cache.objectPath ?? ''
  const cache = await Cache.open(cacheDir, { log: silentLogger() })
  t.same(await cache.evict({ keep: 0 }), [], 'eviction to zero objects removes nothing')
  await t.rejects(cache.remove(n.pub.sha256), { code: 'EPINNED', message: /mounted under a running root \(loop device \/dev\/loop\d+/ }, 'removal refused, naming the loop device')
  await t.rejects(demoteToPartial(cache, n.pub.sha256, [], []), { code: 'EPINNED', message: /not repaired in place/ }, 'an in-place repair refused')
  t.ok((await lstat(object)).isFile(), 'the object is still there')
  const gc = runCli(['cache', 'gc', '--cache', cacheDir, '--keep', '0'])
  t.equal(gc.status, 0)
  t.match(gc.stdout, new RegExp(`kept ${n.pub.sha256}: it is mounted under a running root \\(loop device /dev/loop\\d+ is backed by it\\)`), 'cache gc says what it kept and why')
  t.match(gc.stdout, /0 object\(s\) removed/)

  const chain = await readMountChain([n.sysroot])
  t.match(chain, { root: n.sysroot, upper: r.record.root.upper, lower: r.record.root.lower, loop: /^\/dev\/loop\d+$/, object, digest: n.pub.sha256 }, 'root → overlay → loop → object → digest, from the kernel')
  t.match(formatMountChain(chain!), new RegExp(`^${n.sysroot} → overlay \\(upper .+\\) → .+ → /dev/loop\\d+ → ${object} → sha256:${n.pub.sha256}$`))

  await n.reboot()
  await mkdir(cacheDir, { recursive: true })
  await realRun('mount', ['-L', n.cacheLabel, cacheDir])
  t.teardown(() => unmountUnder(cacheDir).then(() => undefined))
  const after = await Cache.open(cacheDir, { log: silentLogger() })
  t.equal((await after.evict({ keep: 0 })).length, 1, 'once the root is gone (a reboot), the object is an ordinary one again')
})

t.test('kill -9 of the trash deletion at seeded points: the next boot shows nothing of the old uppers, the next run deletes the rest', realGate, async (t) => {
  const n = await node(t)
  const FILES = 4000
  for (let b = 0; b < 2; b++) {
    await n.boot('rd.bootagent.rootmode=overlay')
    const d = join(n.sysroot, 'var', `junk-${b}`)
    await mkdir(d)
    for (let i = 0; i < FILES; i++) await writeFile(join(d, `f${i}`), 'x')
    await n.reboot()
  }
  const r = await n.boot('rd.bootagent.rootmode=overlay')
  const trash = r.record.root.trash ?? ''
  const seed = Number(process.env.BOOT_AGENT_TEST_SEED ?? Date.now() % 100_000)
  t.comment(`seed ${seed} (BOOT_AGENT_TEST_SEED=${seed} repeats this run)`)
  let state = seed
  const next = (): number => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  let kills = 0
  for (let round = 0; round < 3; round++) {
    const left = await countFiles(trash)
    if (left === 0) break
    // The deleting process is killed with SIGKILL after a seeded number of files: a
    // stand-in for `ionice -c3 rm -rf` that deletes that many files and then kill -9s
    // itself, so the kill lands mid-deletion on a loaded machine too (a timed kill of
    // the real rm raced it: 4,000 files go in tens of ms).
    // The deletion runs once per trash entry, so the seeded point is a share of each
    // entry's files (1 + (n-1)·‰/1000 of n: fewer than all of any entry of 2 or more
    // files), not a count of the whole trash's (one larger than an entry deleted it all).
    const permille = Math.floor(1000 * next())
    const killedRun: Runner = (_cmd, args) =>
      realRun('sh', ['-c', `n=$(find "$1" -type f | wc -l); find "$1" -type f | head -n $((1 + (n - 1) * ${permille} / 1000)) | xargs -r rm -f --; kill -9 $$`, 'sh', args[args.length - 1]!])
    const res = await emptyTrash(trash, { log: silentLogger(), run: killedRun })
    const leftAfter = await countFiles(trash)
    const k = leftAfter > 0 && leftAfter < left
    if (k) kills++
    t.ok(res.failed >= 1, `round ${round}: the deletion was killed after ${permille}‰ of each entry's files (${left} files before, ${leftAfter} left); the run went on and said so`)
    // The "next boot": its root is the image alone, whatever the trash still holds.
    await n.reboot()
    await n.boot('rd.bootagent.rootmode=overlay')
    t.same(await hashTree(n.sysroot), await hashTree(n.tree), `round ${round}: nothing of an old upper in the new root`)
  }
  t.ok(kills >= 1, `the deletion was really killed (${kills} time(s))`)
  const last = await emptyTrash(trash, { log: silentLogger() })
  t.equal(last.left, 0, 'a run to the end leaves the trash empty')
  t.equal(await countFiles(trash), 0)
  await n.reboot()
})

/** Regular files under `dir` (find: counting must not be slower than the deletion it watches). */
const countFiles = async (dir: string): Promise<number> => {
  const r = await realRun('sh', ['-c', 'find "$0" -type f | wc -l', dir])
  return Number(r.stdout.trim())
}

/** Watches for the `rm` deleting in `trash` and SIGKILLs it `delayMs` after it is seen; resolves with its pid, or undefined. */
