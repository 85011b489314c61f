/**
 * Acceptance: real kernel, real errors. A squashfs built by mksquashfs is
 * corrupted in two data blocks, placed as a cache object and loop-mounted;
 * reading it makes this kernel log genuine `SQUASHFS error` records in
 * /dev/kmsg. The daemon (in this process, real /dev/kmsg, real sysfs and
 * mountinfo) must report them to the real head node (agent/head/server.ts,
 * started in this process: test/helpers/real-head.ts) with the image digest, name and device,
 * coalesced; its self-check must mark exactly the corrupted chunks (with the
 * pipeline's Cache.markCorrupt); and the next fetch (the pipeline's
 * fetchImage, from a real nginx) must re-download only those chunks.
 *
 * Both kernel tests live in this one file so they run one after the other:
 * squashfs errors name no device, and a second corrupt image read at the same
 * time by another test file would be taken for this one (see docs/daemon.md).
 *
 * Second test — acceptance: the daemon is killed (SIGKILL: no flush, no goodbye) in the
 * middle of a real kernel error flood — repeated reads of a corrupted
 * loop-mounted squashfs with page caches dropped — and started again. The
 * head node (the real one, test/helpers/real-head.ts) must then hold every kernel error
 * record of the run exactly once: the kmsg seq ranges carried by the events
 * are compared with the errors this test reads from /dev/kmsg itself.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { classify } from '../../agent/daemon/classify.js'
import { copyFile, mkdir, readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { Cache } from '../../agent/cache/store.js'
import { fetchImage } from '../../agent/transport/fetch-image.js'
import type { Manifest } from '../../agent/manifest/types.js'
import { startNginx } from '../helpers/nginx.js'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { runDaemon } from '../../agent/daemon/daemon.js'
import { writePosition } from '../../agent/daemon/state.js'
import { startTestHead } from '../helpers/real-head.js'
import { Spool } from '../../agent/events/spool.js'
import { CHUNK_BYTES, bootId, buildCorruptImage, holdKernelErrors, bundleAgent, readRing, lastKmsgSeq, mountImage, readEverything, removeImage, waitFor } from './fixtures.js'

t.test('squashfs errors from a corrupted cached image reach the head node with digest, name and device, the bad chunks get marked, and the next fetch re-downloads only them', gate('root', 'loop', 'kmsg', 'squashfs-tools', 'nginx'), async (t) => {
  t.teardown(await holdKernelErrors())
  const image = await buildCorruptImage('real')
  t.teardown(() => removeImage(image))
  const mounted = await mountImage(image)
  t.teardown(() => mounted.detach())
  const head = await startTestHead(['node-real'])
  t.teardown(() => head.stop())

  // Start where the log is now (a resumed daemon): older records are other tests' business.
  const stateDir = join(image.dir, 'state')
  await writePosition(stateDir, { bootId: await bootId(), seq: await lastKmsgSeq(), lost: 0, time: new Date().toISOString() })
  const ac = new AbortController()
  const daemon = runDaemon({
    node: 'node-real', server: head.url, stateDir, cacheDirs: [image.cacheDir],
    pollMs: 50, coalesceWindowMs: 500, heartbeatIntervalMs: 0, sendIntervalMs: 200, signal: ac.signal,
  })
  t.teardown(async () => {
    ac.abort()
    await daemon
  })

  const failed = await readEverything(mounted.mountpoint)
  t.ok(failed >= 1, `reading the corrupted image failed for ${failed} file(s)`)
  const readDone = Date.now()
  const mine = () => head.events().filter((e) => e.kind === 'squashfs-error' && e.image?.sha256 === image.sha256)
  const arrived = await waitFor(() => mine().length > 0 && mine(), 5_000)
  t.ok(arrived, 'squashfs-error events at the head node within 5 s')
  t.comment(`first squashfs-error event at the head ${Date.now() - readDone} ms after the reads ended`)
  // Let the rest of the flood arrive (same window), then look at all of it.
  await waitFor(() => head.events().some((e) => e.kind === 'integrity' && e.image?.sha256 === image.sha256), 10_000)
  const events = mine()
  for (const e of events) {
    t.equal(e.image?.name, image.name, `${String(e.data.class)}: image name`)
    t.equal(e.data.device, mounted.device, `${String(e.data.class)}: device`)
    t.match(e.data.rule, /^(single|cached)-squashfs-loop$/, 'device found from the squashfs loop mounts')
  }
  const classes = new Set(events.map((e) => e.data.class))
  t.ok(classes.has('decompression-failed'), 'the kernel said the decompression failed')
  t.ok(events.some((e) => Number(e.data.count) > 1), 'a flood was coalesced into counted events')
  const total = events.reduce((n, e) => n + Number(e.data.count), 0)
  t.comment(`${total} kernel records → ${events.length} events: ${events.map((e) => `${String(e.data.class)}×${String(e.data.count)}`).join(', ')}`)

  // The blocks the kernel names cover the bytes we corrupted.
  const pages = events.filter((e) => e.data.class === 'unable-to-read-page')
  for (const e of pages) {
    for (const b of e.data.blocks as { offset: number; size?: number }[]) {
      const hit = image.corrupted.some(([s, end]) => b.offset < end && b.offset + (b.size ?? 1) > s)
      t.ok(hit, `block ${b.offset}+${b.size ?? '?'} contains a corrupted range`)
    }
  }

  const integrity = head.events().find((e) => e.kind === 'integrity' && e.image?.sha256 === image.sha256)
  t.ok(integrity, 'the self-check reported an integrity event')
  t.same(integrity?.data.corruptChunks, image.badChunks, 'exactly the corrupted chunks are marked')
  const meta = JSON.parse(await readFile(`${image.objectPath}.meta.json`, 'utf8')) as { corruptChunks?: number[]; chunkSizes: number[] }
  t.same(meta.corruptChunks, image.badChunks, 'corruptChunks written into the object meta')
  t.equal(meta.chunkSizes.length, image.chunks, 'the rest of the meta is kept')
  t.comment(`corrupted chunks ${JSON.stringify(image.badChunks)} of ${image.chunks}`)
  t.equal(head.received().length, head.events().length, 'no event was sent twice')

  // The next fetch (the pipeline's fetchImage, as the next boot runs it) re-downloads only those chunks,
  // from a real nginx serving the clean image.
  await mounted.detach()
  await mkdir(join(image.dir, 'origin'))
  const origin = await startNginx(join(image.dir, 'origin'))
  t.teardown(() => origin.stop())
  await copyFile(image.cleanPath, join(origin.root, 'image.sqfs'))
  const manifest: Manifest = {
    schema: 1, name: image.name, format: 'squashfs', created: new Date().toISOString(), size: image.size, sha256: image.sha256,
    chunking: { algorithm: 'fixed-64k', minSize: CHUNK_BYTES, avgSize: CHUNK_BYTES, maxSize: CHUNK_BYTES },
    chunks: image.chunkList, urls: [`${origin.url}/image.sqfs`],
  }
  const cache = await Cache.open(image.cacheDir)
  const fetched = await fetchImage({ manifest, cache, reuse: false })
  const badBytes = image.badChunks.reduce((n, i) => n + (image.chunkList[i]?.size ?? 0), 0)
  t.equal(fetched.chunksRepaired, image.badChunks.length, 'the fetch repaired the marked chunks')
  t.equal(fetched.bytesDownloaded, badBytes, `and downloaded only their ${badBytes} bytes of ${image.size}`)
  const served = (await origin.access()).filter((a) => a.path === '/image.sqfs').reduce((n, a) => n + a.bytes, 0)
  t.equal(served, badBytes, 'nginx served exactly those bytes')
  t.equal(createHash('sha256').update(await readFile(image.objectPath)).digest('hex'), image.sha256, 'the cached object is whole again')
  t.notOk((await cache.readMeta(image.sha256))?.corruptChunks?.length, 'and no longer marked corrupt')
})

const ROUNDS = 9
/** Kill after these rounds: the first once some events were delivered, the second right after a burst. */
const KILL_AFTER_ROUNDS = [3, 6]

t.test('a daemon killed in the middle of an error flood and restarted leaves no duplicates and no gaps at the head node', gate('root', 'loop', 'kmsg', 'squashfs-tools'), async (t) => {
  t.teardown(await holdKernelErrors())
  const image = await buildCorruptImage('restart')
  t.teardown(() => removeImage(image))
  const mounted = await mountImage(image)
  t.teardown(() => mounted.detach())
  const head = await startTestHead(['node-restart'])
  t.teardown(() => head.stop())
  const cli = await bundleAgent(image.dir)
  const stateDir = join(image.dir, 'state')
  const boot = await bootId()
  const startSeq = await lastKmsgSeq()
  await writePosition(stateDir, { bootId: boot, seq: startSeq, lost: 0, time: new Date().toISOString() })

  const children = new Set<ChildProcess>()
  t.teardown(() => {
    for (const c of children) c.kill('SIGKILL')
  })
  const startDaemon = (): ChildProcess => {
    const child = spawn(process.execPath, [cli, 'daemon', '--node', 'node-restart', '--server', head.url, '--state-dir', stateDir,
      '--cache-dir', image.cacheDir, '--heartbeat-interval', '0', '--no-metrics'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'info' } })
    child.stderr?.resume()
    children.add(child)
    child.on('exit', () => children.delete(child))
    return child
  }
  const exited = (c: ChildProcess): Promise<void> => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())))

  const kernelEvents = () => head.events().filter((e) => (e.kind === 'squashfs-error' || e.kind === 'io-error') &&
    (e.data.kmsg as { bootId?: string } | undefined)?.bootId === boot)
  let daemon = startDaemon()
  let kills = 0
  let deliveredBeforeKill = 0
  for (let round = 1; round <= ROUNDS; round++) {
    await readEverything(mounted.mountpoint)
    if (KILL_AFTER_ROUNDS.includes(round)) {
      // Mid-flood: the daemon has delivered some events, and is reading,
      // coalescing or spooling a fresh burst when it is killed.
      if (kills === 0) deliveredBeforeKill = (await waitFor(() => kernelEvents().length, 10_000)) ?? 0
      await readEverything(mounted.mountpoint)
      await new Promise((r) => setTimeout(r, kills * 700))
      daemon.kill('SIGKILL')
      await exited(daemon)
      kills++
      await readEverything(mounted.mountpoint) // errors while no daemon runs
      daemon = startDaemon()
    }
  }
  const endSeq = await lastKmsgSeq()
  const expected = (await readRing()).filter((r) => r.seq > startSeq && r.seq <= endSeq && classify(r)).map((r) => r.seq)
  t.ok(expected.length >= ROUNDS * 4, `the flood made ${expected.length} kernel error records`)

  const covered = () => {
    const seqs: number[] = []
    for (const e of kernelEvents()) {
      for (const [a, b] of (e.data.kmsg as { seqs: [number, number][] }).seqs) for (let s = a; s <= b; s++) seqs.push(s)
    }
    return seqs
  }
  const all = await waitFor(() => {
    const have = new Set(covered())
    return expected.every((s) => have.has(s))
  }, 30_000, 100)
  daemon.kill('SIGTERM')
  await exited(daemon)

  const seqs = covered().filter((s) => s > startSeq && s <= endSeq)
  const dupes = seqs.filter((s, i) => seqs.indexOf(s) !== i)
  t.ok(all, 'every kernel error record of the run reached the head node (no gap)')
  if (!all) t.comment(`missing ${JSON.stringify(expected.filter((x) => !seqs.includes(x)))}; events ${JSON.stringify(kernelEvents().map((e) => [e.data.class, e.data.kmsg]))}`)
  t.same(dupes, [], 'no record is covered by two stored events (no duplicate)')
  t.same([...new Set(seqs)].sort((a, b) => a - b), expected, 'the stored seq ranges are exactly the kernel error records')
  const counted = kernelEvents().reduce((n, e) => n + Number(e.data.count), 0)
  t.equal(counted, covered().length, 'event counts agree with their seq ranges')
  t.equal(kills, KILL_AFTER_ROUNDS.length)
  t.ok(deliveredBeforeKill > 0, `the first daemon had delivered ${deliveredBeforeKill} kernel error event(s) before it was killed`)
  t.ok(kernelEvents().length > deliveredBeforeKill, 'the restarted daemon delivered the rest')
  t.comment(JSON.stringify(kernelEvents().map((e) => [e.data.class, (e.data.kmsg as { firstSeq: number }).firstSeq, (e.data.kmsg as { lastSeq: number }).lastSeq, e.data.count])))
  t.comment(`${expected.length} error records, ${kernelEvents().length} events, ${head.received().length - head.events().length} resent duplicate(s) dropped by id at the head`)
})

t.test('a daemon with no saved position blames no old record on the image mounted now: errors of an image since unmounted are reported without an image (#22 finding 6)', gate('root', 'loop', 'kmsg', 'squashfs-tools'), async (t) => {
  t.teardown(await holdKernelErrors())
  const a = await buildCorruptImage('gone')
  t.teardown(() => removeImage(a))
  const b = await buildCorruptImage('now')
  t.teardown(() => removeImage(b))
  const startSeq = await lastKmsgSeq()
  // Image A: mounted, read (genuine SQUASHFS errors), unmounted and detached.
  const ma = await mountImage(a)
  t.teardown(() => ma.detach())
  t.ok((await readEverything(ma.mountpoint)) >= 1, 'reading image A failed')
  await ma.detach()
  const errorsOfA = (await readRing()).filter((r) => r.seq > startSeq && classify(r)?.kind === 'squashfs-error').map((r) => r.seq)
  t.ok(errorsOfA.length >= 1, `image A made ${errorsOfA.length} squashfs error record(s)`)
  // Image B mounted afterwards (never read: it logs nothing), then a daemon starts fresh.
  const mb = await mountImage(b)
  t.teardown(() => mb.detach())
  const stateDir = join(a.dir, 'state')
  const res = await runDaemon({
    node: 'node-fresh', stateDir, cacheDirs: [a.cacheDir, b.cacheDir], once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal,
  })
  t.ok(res.errorsSeen >= errorsOfA.length, `the daemon read the whole ring (${res.recordsRead} records, ${res.errorsSeen} errors)`)
  const spool = new Spool(join(stateDir, 'spool'))
  const events = (await spool.peekFiles(await spool.files())).map((x) => ({ image: x.event.image, data: x.event.data as Record<string, unknown> }))
  t.same(events.filter((e) => e.image?.sha256 === b.sha256).map((e) => e.data.class), [], 'no event blames image B, mounted after the errors were logged')
  const ofA = events.filter((e) => (e.data.kmsg as { seqs?: [number, number][] } | undefined)?.seqs?.some(([x, y]) => errorsOfA.some((s) => s >= x && s <= y)))
  t.ok(ofA.length >= 1, `image A's records are reported (${ofA.length} event(s))`)
  for (const e of ofA) {
    t.equal(e.image, undefined, `${String(e.data.class)}: without an image`)
    t.equal(e.data.rule, 'unattributed', `${String(e.data.class)}: rule unattributed`)
    t.match(e.data.unattributed, /before .*(bound|mapped)/, `${String(e.data.class)}: with the reason: ${String(e.data.unattributed)}`)
  }
})
