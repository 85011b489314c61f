/**
 * Acceptance (#21 build item 1), all real: a one-node Slurm cluster started
 * by the test (slurmctld, slurmd, munge from Debian: test/helpers/slurm.ts),
 * a corrupted squashfs loop-mounted and read so that this kernel logs genuine
 * `SQUASHFS error` lines, and the daemon (runDaemon, real /dev/kmsg) with
 * the Slurm guard in drain+resume mode running the real scontrol.
 *
 * One thing is staged, and said so: "the next boot". A test cannot reboot
 * this machine, so the guard's record of the boot it drained in
 * (<state>/slurm.json) is rewritten to name an earlier boot id, which is
 * what a reboot leaves behind; the daemon then starts on a verified boot
 * record, as after a clean boot.
 */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { startSlurm } from '../helpers/slurm.js'
import { runDaemon } from '../../agent/daemon/daemon.js'
import { writePosition } from '../../agent/daemon/state.js'
import { parseBootRecord } from '../../agent/daemon/boot-record.js'
import { SlurmGuard } from '../../agent/daemon/slurm.js'
import { bootId, buildCorruptImage, holdKernelErrors, lastKmsgSeq, mountImage, readEverything, readRing, removeImage, waitFor } from './fixtures.js'
import { classify } from '../../agent/daemon/classify.js'

t.test('a genuine SQUASHFS error drains the node in a real Slurm with a boot-agent: reason; an operator\'s reason is never cleared; a clean verified boot resumes only our own', gate('root', 'loop', 'kmsg', 'squashfs-tools', 'slurm'), async (t) => {
  const slurm = await startSlurm()
  t.teardown(() => slurm.stop())
  t.teardown(await holdKernelErrors())
  const image = await buildCorruptImage('slurm')
  t.teardown(() => removeImage(image))
  const mounted = await mountImage(image)
  t.teardown(() => mounted.detach())
  const stateDir = join(image.dir, 'state')
  const boot = await bootId()
  // The boot stage's record of a verified boot of this image.
  const bootRecord = parseBootRecord(JSON.stringify({ node: 'node-slurm', result: 'ok', style: 'cache-squashfs', image: { name: image.name, sha256: image.sha256, size: image.size }, fallbacks: [] }))

  /** A daemon run with a fresh guard, from the end of the kernel log now; stop() ends it. */
  const startDaemon = async () => {
    await writePosition(stateDir, { bootId: boot, seq: await lastKmsgSeq(), lost: 0, time: new Date().toISOString() })
    const guard = new SlurmGuard({ mode: 'drain+resume', nodeName: slurm.nodeName, env: slurm.env })
    const ac = new AbortController()
    const done = runDaemon({ node: 'node-slurm', stateDir, cacheDirs: [image.cacheDir], bootRecord, observers: [guard], selfCheck: false,
      pollMs: 50, coalesceWindowMs: 300, heartbeatIntervalMs: 0, signal: ac.signal })
    // The start-of-boot decision is taken once the kernel log is caught up.
    const first = await waitFor(() => guard.decisions.length > 0, 10_000)
    t.ok(first, 'the guard took its start-of-boot decision')
    await guard.idle()
    const stop = async () => {
      ac.abort()
      await done
    }
    t.teardown(stop)
    return { guard, stop }
  }

  // 1. Trouble: a genuine kernel SQUASHFS error drains the node within 10 s of the kernel line.
  let d = await startDaemon()
  t.same(d.guard.decisions.map((x) => x.action), ['none'], 'an idle node with a clean boot: nothing to do at start')
  const before = await lastKmsgSeq()
  await readEverything(mounted.mountpoint)
  const firstError = (await readRing()).find((r) => r.seq > before && classify(r)?.kind === 'squashfs-error')
  t.ok(firstError, 'the kernel logged a SQUASHFS error')
  t.match(firstError?.message, /^SQUASHFS error/, `kernel line: ${firstError?.message ?? ''}`)
  const uptimeMs = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]) * 1000
  const lineAgeMs = firstError ? uptimeMs - firstError.usec / 1000 : 0
  const t0 = Date.now() - lineAgeMs // wall time of the kernel line
  const drained = await waitFor(async () => {
    const n = await slurm.node()
    return /^drain/.test(n.state) && n.reason.startsWith('boot-agent:') && n
  }, 10_000, 100)
  const elapsed = Date.now() - t0
  t.ok(drained, `sinfo shows the node drained with a boot-agent: reason (${JSON.stringify(drained)})`)
  t.ok(elapsed <= 10_000, `within 10 s of the kernel line: ${elapsed} ms`)
  t.comment(`drained ${elapsed} ms after the kernel's SQUASHFS error line`)
  t.equal(drained && drained.reason, `boot-agent: squashfs-error sha256:${image.sha256.slice(0, 12)}`, 'the reason names the kind and the image digest')
  const sinfoR = await slurm.client('sinfo', ['-R', '-h', '-o', '%E|%N'])
  t.match(sinfoR, `boot-agent: squashfs-error sha256:${image.sha256.slice(0, 12)}|${slurm.nodeName}`, `sinfo -R: ${sinfoR.trim()}`)
  t.equal(d.guard.counters.drains, 1, 'one drain, however many errors followed')
  await d.stop()

  // 2. The daemon restarted in the same boot does not resume its own drain.
  d = await startDaemon()
  t.match(d.guard.decisions[0], { action: 'none', why: /this very boot/ }, 'same boot: our drain stays')
  t.match((await slurm.node()).state, /^drain/, 'still drained')
  await d.stop()

  // 3. A later, clean, verified boot resumes our own drain.
  const recordPath = join(stateDir, 'slurm.json')
  const rec = JSON.parse(await readFile(recordPath, 'utf8')) as { bootId: string }
  t.equal(rec.bootId, boot, 'the drain was recorded with this boot id')
  await writeFile(recordPath, JSON.stringify({ ...rec, bootId: 'an-earlier-boot' }))
  d = await startDaemon()
  t.match(d.guard.decisions[0], { action: 'resume' }, 'a clean verified boot: resume')
  const resumed = await slurm.node()
  t.match(resumed, { state: /^(idle|mixed|allocated)/, reason: 'none' }, `resumed: ${JSON.stringify(resumed)}`)
  await d.stop()

  // 4. An operator's reason: neither cleared at start nor overwritten on trouble.
  const operatorReason = 'operator: bad DIMM, ticket 4711'
  await slurm.client('scontrol', ['update', `NodeName=${slurm.nodeName}`, 'State=DRAIN', `Reason=${operatorReason}`])
  d = await startDaemon()
  t.match(d.guard.decisions[0], { action: 'none', why: /someone else/ }, 'an operator\'s drain is not resumed')
  await readEverything(mounted.mountpoint)
  await waitFor(() => d.guard.decisions.length > 1, 10_000)
  await d.guard.idle()
  t.match(d.guard.decisions[1], { action: 'none', why: /someone else/ }, 'trouble on an operator-drained node keeps their reason')
  const kept = await slurm.node()
  t.match(kept, { state: /^drain/, reason: operatorReason }, `operator's reason kept: ${JSON.stringify(kept)}`)
  t.equal(d.guard.counters.failures, 0, 'no scontrol call failed')
  await d.stop()
})
