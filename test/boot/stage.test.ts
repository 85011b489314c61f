/**
 * The boot stage end to end on real parts: loop devices with real ext4
 * labels (unique per test), real squashfs images, a real nginx serving the
 * head-node protocol's files (test/helpers/static-head.ts), the real cache
 * and download. Only the reboot command is scripted (it would reboot the
 * machine running the tests) and the reboot delay is skipped.
 */
import t, { type Test } from 'tap'
import { open, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { runBootStage, type ImagePipeline, type StageOutcome } from '../../agent/boot/stage.js'
import type { Cache } from '../../agent/cache/store.js'
import { idleHashWorkers } from '../../agent/hash/pool.js'
import { run as realRun, type Runner } from '../../agent/core/exec.js'
import { silentLogger } from '../../agent/core/log.js'
import { Spool } from '../../agent/events/spool.js'
import { commands } from '../../agent/core/system.js'
import { gate } from '../helpers/capability.js'
import { hashTree, makeOsTree, mksquashfs, scratch, unmountUnder, uniqueLabel, type Scratch } from '../helpers/loop.js'
import { startNginx, type Nginx } from '../helpers/nginx.js'
import { publishStatic } from '../helpers/static-head.js'
import { forgeCachedObject } from '../helpers/forge.js'

const realGate = gate('root', 'loop', 'squashfs-tools', 'nginx')
const MiB = 1024 * 1024

interface Env {
  s: Scratch
  www: string
  nginx: Nginx
  cacheLabel: string
  rootLabel: string
  runDir: string
  sysroot: string
  reboots: string[][]
  run: Runner
  boot(cmdline: string, pipeline?: ImagePipeline<Cache>): Promise<StageOutcome>
  /** Unmounts what a boot left mounted and empties the run directory, like a reboot. */
  reboot(): Promise<void>
}

const setup = async (t: { teardown(fn: () => Promise<void>): void }, opts: { cacheMiB?: number; rootMiB?: number } = {}): Promise<Env> => {
  const s = await scratch(t)
  const www = join(s.dir, 'www')
  const nginx = await startNginx(www)
  t.teardown(() => nginx.stop())
  const cacheLabel = uniqueLabel('bac')
  const rootLabel = uniqueLabel('bar')
  await s.disk({ sizeMiB: opts.cacheMiB ?? 64, label: cacheLabel })
  await s.disk({ sizeMiB: opts.rootMiB ?? 64, label: rootLabel })
  const runDir = join(s.dir, 'run')
  const sysroot = join(s.dir, 'sysroot')
  const reboots: string[][] = []
  const run: Runner = async (cmd, args, o) => {
    if (cmd === commands.reboot) {
      reboots.push([...args])
      return { exitCode: 0, signal: null, stdout: '', stderr: '' }
    }
    return realRun(cmd, args, o)
  }
  const env: Env = {
    s,
    www,
    nginx,
    cacheLabel,
    rootLabel,
    runDir,
    sysroot,
    reboots,
    run,
    boot: (cmdline, pipeline = cachePipeline) =>
      runBootStage({ cmdline: parseBootCmdline(cmdline), runDir, sysroot, pipeline, log: silentLogger(), run, sleep: async () => {} }),
    reboot: async () => {
      await unmountUnder(runDir)
      await unmountUnder(sysroot)
      await rm(runDir, { recursive: true, force: true })
    },
  }
  return env
}

const image = async (env: Env, name: string, opts: { extraBytes?: number; marker?: string } = {}) => {
  const tree = await makeOsTree(join(env.s.dir, `tree-${name}`), opts)
  const img = await mksquashfs(tree, join(env.s.dir, `${name}.sqfs`))
  return { tree, img }
}

// rootmode=unpack: these tests hold the unpack path to ClusterWare's behaviour; overlay mode has test/boot/overlay.test.ts.
const line = (env: Env, extra = '') =>
  `rd.bootagent.server=${env.nginx.url} rd.bootagent.node=n1 rd.bootagent.devtimeout=1 rd.bootagent.rebootdelay=0 rd.bootagent.rootmode=unpack ${extra}`

const spooled = async (dir: string) => (await new Spool(dir).peek(100)).map((e) => e.event)
const imageBytesServed = async (env: Env, path: string) =>
  (await env.nginx.access()).filter((a) => a.path === path).reduce((n, a) => n + a.bytes, 0)

t.test('cold disked boot (miss), then warm (hit): the sysroot is the image tree both times', realGate, async (t) => {
  const env = await setup(t)
  const { tree, img } = await image(env, 'os', { extraBytes: 2 * MiB })
  const pub = await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${env.cacheLabel}`, root: `LABEL=${env.rootLabel}` } })
  const want = await hashTree(tree)

  const cold = await env.boot(line(env))
  t.equal(cold.exitCode, 0, cold.record.error?.message ?? 'cold boot ok')
  t.match(cold.record, { result: 'ok', style: 'disked', requestedStyle: 'disked', fallbacks: [], image: { sha256: pub.sha256, size: pub.size }, cache: { hit: false, verifiedBy: 'download', inRam: false } })
  t.ok(cold.record.bytesFetched >= pub.size, `miss fetched the image (${cold.record.bytesFetched} bytes)`)
  t.ok(cold.record.cache.objectPath?.startsWith(join(env.runDir, 'cache', 'objects', 'sha256')), 'object on the cache partition')
  t.same(await hashTree(env.sysroot), want, 'sysroot files identical to the image tree')
  t.match(JSON.parse(await readFile(join(env.sysroot, '.boot-agent-image'), 'utf8')), { sha256: pub.sha256 })
  t.same(JSON.parse(await readFile(join(env.runDir, 'boot-record.json'), 'utf8')).cache.hit, false, 'record written to the run dir')
  t.equal(cold.record.spoolDir, join(env.runDir, 'cache', 'spool'), 'events spooled on the cache partition')
  t.same((await spooled(cold.record.spoolDir)).map((e) => e.kind), ['boot'])
  for (const k of ['descriptor', 'partitions', 'manifest', 'fetch', 'measure', 'root', 'root.wipe', 'root.unsquashfs', 'root.moveUp', 'root.check', 'root.bind', 'total']) t.type(cold.record.timings[k], 'number', `timing ${k}`)

  const coldUsed = (JSON.parse(await readFile(`${cold.record.cache.objectPath}.meta.json`, 'utf8')) as { lastUsedAt: string }).lastUsedAt
  // Something written into the running root must not survive the next disked boot.
  await writeFile(join(env.sysroot, 'etc', 'local-change'), 'admin was here')
  await env.reboot()
  await env.nginx.clearAccess()

  // The hit's digest is read while the cache is listed and the manifest fetched, handed to the fetch, then stopped.
  const early: { signal?: AbortSignal; handed?: boolean; warmed?: number } = {}
  const spy: ImagePipeline<Cache> = {
    ...cachePipeline,
    startFastDigest: (c, sha, signal) => ((early.signal = signal), cachePipeline.startFastDigest!(c, sha, signal)),
    fetchImage: (o) => ((early.handed = o.digest !== undefined), cachePipeline.fetchImage(o)),
    // Sampled when the cache is opened (after the descriptor and the partitions), just before the digest takes them.
    openCache: (dir, log) => ((early.warmed = idleHashWorkers()), cachePipeline.openCache(dir, log)),
  }
  const warm = await env.boot(line(env), spy)
  t.equal(warm.exitCode, 0)
  t.match(warm.record, { result: 'ok', style: 'disked', cache: { hit: true, verifiedBy: 'manifest-xxh64' }, bytesFetched: 0 })
  t.match((await spooled(warm.record.spoolDir)).filter((e) => e.kind === 'boot').at(-1)?.data, { record: { cache: { hit: true, verifiedBy: 'manifest-xxh64' } } }, 'the boot event says what the hit was checked against')
  t.equal(early.handed, true, 'the digest started in the cache step reached the fetch')
  t.equal(early.signal?.aborted, true, 'and its reading was ended with the fetch step')
  t.ok((early.warmed ?? 0) >= 1, `its workers were started with the stage (${early.warmed} idle when the cache was opened)`)
  t.equal(idleHashWorkers(), 0, 'and ended once the image was fetched: none left for the exit to tear down')
  // The hit's use is recorded after the fetch step (fetchImage recordLater), before the stage ends.
  const used = JSON.parse(await readFile(`${warm.record.cache.objectPath}.meta.json`, 'utf8')) as { lastUsedAt: string }
  t.ok(Date.parse(used.lastUsedAt) > Date.parse(coldUsed), `the hit is recorded in the object's metadata (${coldUsed} → ${used.lastUsedAt})`)
  t.equal(await imageBytesServed(env, pub.imageUrlPath), 0, 'no image byte served on a hit')
  t.same(await hashTree(env.sysroot), want, 'identical again')
  t.notOk((await readdir(join(env.sysroot, 'etc'))).includes('local-change'), 'the local change is gone')
})

t.test('cache partition missing → disked without a cache, fallback with its reason', realGate, async (t) => {
  const env = await setup(t)
  const { tree, img } = await image(env, 'os')
  const missing = uniqueLabel('nope')
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${missing}`, root: `LABEL=${env.rootLabel}` } })
  const r = await env.boot(line(env))
  t.equal(r.exitCode, 0, r.record.error?.message ?? '')
  t.equal(r.record.style, 'disked')
  t.same(r.record.fallbacks.map((f) => f.kind), ['cache-missing'])
  t.match(r.record.fallbacks[0]?.reason, new RegExp(`LABEL=${missing} not found`))
  t.match(r.record.cache, { inRam: true, hit: false })
  t.equal(r.record.cache.objectPath, undefined, 'the RAM copy was dropped once unpacked')
  t.same(await readdir(env.runDir).then((d) => d.includes('ram-cache')), false, 'no RAM cache left using memory')
  t.equal(r.record.spoolDir, join(env.runDir, 'spool'))
  t.same((await spooled(r.record.spoolDir)).map((e) => e.kind), ['fallback', 'boot'])
  t.same(await hashTree(env.sysroot), await hashTree(tree))
})

t.test('root partition missing → rwram, cache still used', realGate, async (t) => {
  const env = await setup(t)
  const { tree, img } = await image(env, 'os')
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${env.cacheLabel}`, root: `LABEL=${uniqueLabel('nope')}` } })
  const r = await env.boot(line(env))
  t.equal(r.exitCode, 0, r.record.error?.message ?? '')
  t.match(r.record, { style: 'rwram', requestedStyle: 'disked', cache: { inRam: false } })
  t.same(r.record.fallbacks.map((f) => f.kind), ['root-missing'])
  t.same(await hashTree(env.sysroot), await hashTree(tree))
})

t.test('both missing → rwram with the image in RAM, two fallbacks', realGate, async (t) => {
  const env = await setup(t)
  const { tree, img } = await image(env, 'os')
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${uniqueLabel('nope')}`, root: `LABEL=${uniqueLabel('nope')}` } })
  const r = await env.boot(line(env))
  t.equal(r.exitCode, 0, r.record.error?.message ?? '')
  t.match(r.record, { style: 'rwram', cache: { inRam: true } })
  t.same(r.record.fallbacks.map((f) => f.kind), ['cache-missing', 'root-missing'])
  t.same((await spooled(r.record.spoolDir)).map((e) => e.kind), ['fallback', 'fallback', 'boot'])
  t.same(await hashTree(env.sysroot), await hashTree(tree))
})

t.test('cache too small for the image: policy ram boots from RAM, clear-reboot clears and reboots', realGate, async (t) => {
  // 20 MiB cache (~18 MiB usable), 10 MiB images: one fits, the previous one (kept by eviction) plus the next do not.
  const env = await setup(t, { cacheMiB: 20 })
  const a = await image(env, 'a', { extraBytes: 10 * MiB, marker: 'a' })
  const b = await image(env, 'b', { extraBytes: 10 * MiB, marker: 'b' })
  const parts = { cache: `LABEL=${env.cacheLabel}`, root: `LABEL=${env.rootLabel}` }
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: a.img, name: 'os', style: 'disked', partitions: parts })
  const first = await env.boot(line(env))
  t.equal(first.exitCode, 0, first.record.error?.message ?? '')
  await env.reboot()

  const pubB = await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: b.img, name: 'os', style: 'disked', partitions: parts, policies: { cacheFull: 'ram' } })
  const ram = await env.boot(line(env))
  t.equal(ram.exitCode, 0, ram.record.error?.message ?? '')
  t.match(ram.record, { style: 'disked', cache: { inRam: true } })
  t.same(ram.record.fallbacks.map((f) => f.kind), ['cache-full'])
  t.match(ram.record.fallbacks[0]?.reason, /policy ram/)
  t.same(await hashTree(env.sysroot), await hashTree(b.tree), 'booted image b from RAM')
  await env.reboot()

  // The command line overrides the descriptor's policy.
  const cr = await env.boot(line(env, 'rd.bootagent.cachefull=clear-reboot'))
  t.equal(cr.exitCode, 4, 'exit code 4: reboot')
  t.same(env.reboots, [[]], 'the reboot command ran once')
  t.match(cr.record, { result: 'failed', action: 'reboot', error: { code: 'ECACHEFULL' } })
  const kinds = (await spooled(cr.record.spoolDir)).map((e) => e.kind)
  t.ok(kinds.includes('cache') && kinds.includes('boot-failed'), `cache clear and failure spooled (${kinds.join(',')})`)
  const left = await readdir(join(env.runDir, 'cache', 'objects', 'sha256'), { recursive: true, withFileTypes: true })
  t.same(left.filter((d) => d.isFile()).map((d) => d.name), [], 'the cache was cleared: no object left')
  await env.reboot()

  const after = await env.boot(line(env, 'rd.bootagent.cachefull=clear-reboot'))
  t.equal(after.exitCode, 0, 'after the clear the image fits')
  t.match(after.record, { cache: { inRam: false, hit: false }, image: { sha256: pubB.sha256 }, fallbacks: [] })
})

/**
 * Publishes an image, boots it once (the cache fills), overwrites 4 KiB of the
 * cached object at byte `at`, and "reboots" (nginx's access log cleared).
 */
const cachedThenCorrupted = async (t: Test, env: Env, o: { extraBytes: number; at: number; extra?: string }): Promise<{ tree: string }> => {
  const { tree, img } = await image(env, 'os', { extraBytes: o.extraBytes })
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${env.cacheLabel}`, root: `LABEL=${env.rootLabel}` } })
  const first = await env.boot(line(env, o.extra))
  t.equal(first.exitCode, 0, first.record.error?.message ?? '')
  const fh = await open(first.record.cache.objectPath ?? '', 'r+')
  await fh.write(randomBytes(4096), 0, 4096, o.at)
  await fh.close()
  await env.reboot()
  await env.nginx.clearAccess()
  return { tree }
}

t.test('an object corrupted in the cache is re-fetched before use', realGate, async (t) => {
  const env = await setup(t)
  const { tree } = await cachedThenCorrupted(t, env, { extraBytes: 4 * MiB, at: 2 * MiB })
  const second = await env.boot(line(env))
  t.equal(second.exitCode, 0, second.record.error?.message ?? '')
  t.equal(second.record.cache.hit, false, 'not used as a hit')
  t.ok(second.record.bytesFetched > 0, `re-fetched ${second.record.bytesFetched} bytes`)
  const kinds = (await spooled(second.record.spoolDir)).map((e) => e.kind)
  t.ok(kinds.includes('integrity'), `integrity event spooled (${kinds.join(',')})`)
  t.same(await hashTree(env.sysroot), await hashTree(tree), 'booted the right bytes')
})

t.test('an object replaced by other bytes of the same size, its metadata recomputed to match, is not booted: detected, re-fetched, reported', realGate, async (t) => {
  const env = await setup(t)
  const { tree, img } = await image(env, 'os', { extraBytes: 4 * MiB })
  const pub = await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: `LABEL=${env.cacheLabel}`, root: `LABEL=${env.rootLabel}` } })
  const first = await env.boot(line(env))
  t.equal(first.exitCode, 0, first.record.error?.message ?? '')
  // Default settings (verify=fast); bytes and metadata forged together: nothing on the partition disagrees.
  await forgeCachedObject(first.record.cache.objectPath ?? '', { at: 2 * MiB })
  await env.reboot()
  await env.nginx.clearAccess()
  const second = await env.boot(line(env))
  t.equal(second.exitCode, 0, second.record.error?.message ?? '')
  t.match(second.record.cache, { hit: false, verifiedBy: 'download' }, 'not used as a hit')
  const served = await imageBytesServed(env, pub.imageUrlPath)
  t.ok(served > 0 && served < pub.size, `only the forged part re-fetched (${served} of ${pub.size} bytes)`)
  const events = await spooled(second.record.spoolDir)
  t.match(events.find((e) => e.kind === 'integrity')?.data, { what: /failed re-verification/, chunksRepaired: Number }, `integrity event spooled (${events.map((e) => e.kind).join(',')})`)
  t.same(await hashTree(env.sysroot), await hashTree(tree), 'booted the published bytes')
})

t.test('rd.bootagent.verify=strong: the sha256 workers start with the stage, a corrupted chunk is found and re-fetched', realGate, async (t) => {
  const env = await setup(t)
  const { tree } = await cachedThenCorrupted(t, env, { extraBytes: 12 * MiB, at: 3 * MiB, extra: 'rd.bootagent.verify=strong' })
  const seen: { verify?: string; warmed?: number } = {}
  const spy: ImagePipeline<Cache> = {
    ...cachePipeline,
    warmUp: (verify) => {
      seen.verify = verify
      cachePipeline.warmUp!(verify)
    },
    // Sampled when the cache is opened (after the descriptor and the partitions), before any hashing.
    openCache: (dir, log) => ((seen.warmed = idleHashWorkers()), cachePipeline.openCache(dir, log)),
  }
  const second = await env.boot(line(env, 'rd.bootagent.verify=strong'), spy)
  t.equal(second.exitCode, 0, second.record.error?.message ?? '')
  t.equal(seen.verify, 'strong', "the stage warmed up for the command line's mode")
  t.ok((seen.warmed ?? 0) >= 1, `sha256 workers were started with the stage (${seen.warmed} idle when the cache was opened)`)
  t.equal(idleHashWorkers(), 0, 'and ended once the image was fetched')
  t.equal(second.record.cache.hit, false, 'the corrupted object was not used as a hit')
  t.ok(second.record.bytesFetched > 0 && second.record.bytesFetched < 4 * MiB, `only the bad chunk(s) re-fetched (${second.record.bytesFetched} bytes)`)
  t.same(await hashTree(env.sysroot), await hashTree(tree), 'booted the right bytes')
})

t.test('an image that verifies but will not unpack fails the boot, leaves no half root, and follows onfail', realGate, async (t) => {
  const env = await setup(t)
  const parts = { cache: `LABEL=${env.cacheLabel}`, root: `LABEL=${env.rootLabel}` }
  const good = await image(env, 'good')
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: good.img, name: 'os', style: 'disked', partitions: parts })
  t.equal((await env.boot(line(env))).exitCode, 0)
  await env.reboot()

  // A bad build published honestly: its inode table reads, a compressed data block is broken.
  const bad = await image(env, 'bad')
  await writeFile(join(bad.tree, 'usr', 'big.txt'), randomBytes(3 * MiB).toString('base64'))
  const badImg = await mksquashfs(bad.tree, join(env.s.dir, 'bad2.sqfs'), ['-comp', 'gzip'])
  const fh = await open(badImg, 'r+')
  await fh.write(Buffer.alloc(64 * 1024), 0, 64 * 1024, 1 * MiB)
  await fh.close()
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: badImg, name: 'os', style: 'disked', partitions: parts, policies: { onfail: 'reboot' } })
  const r = await env.boot(line(env))
  t.equal(r.exitCode, 4, 'onfail=reboot from the descriptor: exit 4')
  t.same(env.reboots.length, 1, 'the reboot command ran')
  t.match(r.record, { result: 'failed', action: 'reboot', error: { code: 'EUNPACK' } })
  t.same((await spooled(r.record.spoolDir)).map((e) => e.kind).at(-1), 'boot-failed', 'why was spooled')
  const { stdout } = await realRun('findmnt', ['-rn', '-o', 'TARGET'])
  t.notOk(stdout.split('\n').includes(env.sysroot), 'nothing mounted at the sysroot')
  // Look at the root partition: only lost+found, no half-unpacked tree.
  const look = join(env.s.dir, 'look')
  await realRun('mkdir', ['-p', look])
  const dev = (await realRun('blkid', ['-c', '/dev/null', '-o', 'device', '-t', `LABEL=${env.rootLabel}`])).stdout.trim()
  await realRun('mount', ['-o', 'ro', dev, look])
  t.same(await readdir(look), ['lost+found'], 'the root partition is empty, not half-built')
  await realRun('umount', [look])
  await env.reboot()

  // Garbage with a correct manifest: refused before the root is touched; onfail=shell → exit 3.
  const garbage = join(env.s.dir, 'garbage.sqfs')
  await writeFile(garbage, randomBytes(2 * MiB))
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: garbage, name: 'os', style: 'disked', partitions: parts })
  const g = await env.boot(line(env, 'rd.bootagent.onfail=shell'))
  t.equal(g.exitCode, 3)
  t.match(g.record, { result: 'failed', action: 'shell', error: { code: 'EUNPACK', message: /inode table/ } })
})

t.test('roram boot mounts the cached image read-only under an overlay and reads', realGate, async (t) => {
  const env = await setup(t)
  const { img } = await image(env, 'os')
  await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'roram', partitions: { cache: `LABEL=${env.cacheLabel}` } })
  const r = await env.boot(line(env))
  t.equal(r.exitCode, 0, r.record.error?.message ?? '')
  t.match(r.record, { style: 'roram', fallbacks: [], cache: { inRam: false } })
  t.equal(await readFile(join(env.sysroot, 'etc', 'hostname'), 'utf8'), 'compute\n')
  const { stdout } = await realRun('findmnt', ['-n', '-o', 'FSTYPE', env.sysroot])
  t.equal(stdout.trim(), 'overlay')
  const lower = await realRun('findmnt', ['-n', '-o', 'SOURCE,FSTYPE,OPTIONS', join(env.runDir, 'mnt', 'roram-lower')])
  t.match(lower.stdout, /squashfs\s+ro/)
})

t.test('a bad server URL or partition spec stops before anything is touched, naming the key', async (t) => {
  const dir = t.testdir()
  const boot = (cmdline: string) => runBootStage({ cmdline: parseBootCmdline(cmdline), runDir: join(dir, 'run'), sysroot: join(dir, 'sys'), pipeline: cachePipeline, log: silentLogger(), sleep: async () => {} })
  t.throws(() => parseBootCmdline('rd.bootagent.server=htp:/x'), { code: 'ECONFIG', key: 'rd.bootagent.server' })
  t.throws(() => parseBootCmdline('rd.bootagent.root=sda2'), { code: 'ECONFIG', key: 'rd.bootagent.root' })
  const r = await boot('rd.bootagent.node=n1')
  t.equal(r.exitCode, 2, 'configuration error: exit 2')
  t.match(r.record, { result: 'failed', error: { code: 'ECONFIG', message: /rd.bootagent.server/ } })
})

t.test('a manifest that is not the digest the descriptor pinned fails the boot and is reported as integrity', realGate, async (t) => {
  const env = await setup(t)
  const { img } = await image(env, 'os')
  const pub = await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'rwram', partitions: {} })
  // The head node's descriptor pins other bytes than its manifest describes (an overwritten image).
  const descPath = join(env.www, 'v1', 'nodes', 'n1', 'boot')
  const d = JSON.parse(await readFile(descPath, 'utf8'))
  d.image.sha256 = 'f'.repeat(64)
  await writeFile(descPath, JSON.stringify(d))
  const r = await env.boot(line(env))
  t.equal(r.exitCode, 1, 'onfail default emergency: exit 1')
  t.match(r.record, { result: 'failed', action: 'emergency', error: { code: 'EINTEGRITY' } })
  const evs = await spooled(r.record.spoolDir)
  t.same(evs.map((e) => e.kind), ['integrity', 'boot-failed'])
  t.match(evs[0]?.data, { expected: 'f'.repeat(64), found: pub.sha256 })
})

t.test('a root spec that resolves to the cache device is refused before anything is touched: no wipe, no download, no reboot', realGate, async (t) => {
  const env = await setup(t)
  const { img } = await image(env, 'os')
  const cacheSpec = `LABEL=${env.cacheLabel}`
  const pub = await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: { cache: cacheSpec, root: `LABEL=${env.rootLabel}` } })
  const first = await env.boot(line(env))
  t.equal(first.exitCode, 0, first.record.error?.message ?? 'the cache holds the image')
  await env.reboot()
  const cacheDev = (await realRun('blkid', ['-c', '/dev/null', '-o', 'device', '-t', cacheSpec])).stdout.trim()
  const cacheUuid = (await realRun('blkid', ['-c', '/dev/null', '-o', 'value', '-s', 'UUID', cacheDev])).stdout.trim()
  t.ok(cacheDev.startsWith('/dev/loop') && cacheUuid, `the cache is ${cacheDev} (UUID ${cacheUuid})`)

  /** What is on the cache device: every path with its type, size and, for files, its sha256. */
  const look = join(env.s.dir, 'look')
  const cacheContents = async (): Promise<Record<string, string>> => {
    await realRun('mkdir', ['-p', look])
    await realRun('mount', ['-o', 'ro', cacheDev, look])
    try {
      return await hashTree(look, [])
    } finally {
      await realRun('umount', [look])
    }
  }
  const before = await cacheContents()
  t.ok(Object.keys(before).some((p) => p.startsWith('objects/sha256/') && p.endsWith(pub.sha256.slice(2))), 'the object is on the cache')

  const cases = [
    { name: 'root LABEL= of the cache (descriptor)', parts: { cache: cacheSpec, root: cacheSpec }, extra: '', rootSpec: cacheSpec, key: 'partitions.root' },
    { name: 'root UUID= of the cache while cache is LABEL= (descriptor)', parts: { cache: cacheSpec, root: `UUID=${cacheUuid}` }, extra: '', rootSpec: `UUID=${cacheUuid}`, key: 'partitions.root' },
    { name: 'root the cache\'s /dev path (command line)', parts: { cache: cacheSpec, root: `LABEL=${env.rootLabel}` }, extra: `rd.bootagent.root=${cacheDev}`, rootSpec: cacheDev, key: 'rd.bootagent.root' },
  ]
  for (const c of cases) {
    await publishStatic({ root: env.www, server: env.nginx.url, node: 'n1', image: img, name: 'os', style: 'disked', partitions: c.parts, policies: { onfail: 'reboot' } })
    await env.nginx.clearAccess()
    const r = await env.boot(line(env, c.extra))
    t.equal(r.exitCode, 2, `${c.name}: a configuration error (exit 2), not a failed boot`)
    t.match(r.record, { result: 'failed', error: { code: 'ECONFIG' } }, c.name)
    const msg = r.record.error?.message ?? ''
    for (const part of [c.key, c.rootSpec, cacheSpec, cacheDev]) t.ok(msg.includes(part), `${c.name}: the message names ${part}: ${msg}`)
    t.same(env.reboots, [], `${c.name}: no reboot although onfail=reboot`)
    t.equal(await imageBytesServed(env, pub.imageUrlPath), 0, `${c.name}: nothing downloaded`)
    const { stdout } = await realRun('findmnt', ['-rn', '-o', 'TARGET'])
    t.notOk(stdout.split('\n').some((m) => m.startsWith(env.runDir) || m === env.sysroot), `${c.name}: nothing left mounted`)
    await env.reboot()
    t.same(await cacheContents(), before, `${c.name}: the cache is exactly as it was`)
  }
})
