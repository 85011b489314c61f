/**
 * Acceptance: the daemon is killed (SIGKILL: no flush, no goodbye) in the
 * middle of a real kernel error flood — repeated reads of a corrupted
 * loop-mounted squashfs with page caches dropped — and started again. The
 * head node (test/events/head-stub.ts) must then hold every kernel error
 * record of the run exactly once: the kmsg seq ranges carried by the events
 * are compared with the errors this test reads from /dev/kmsg itself.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { writePosition } from '../../agent/daemon/state.js'
import { classify } from '../../agent/daemon/classify.js'
import { startHeadStub } from '../events/head-stub.js'
import { bootId, buildCorruptImage, bundleAgent, lastKmsgSeq, mountImage, readEverything, readRing, removeImage, waitFor } from './fixtures.js'

const ROUNDS = 8
const KILL_AFTER_ROUND = 4

t.test('a daemon killed in the middle of an error flood and restarted leaves no duplicates and no gaps at the head node', gate('root', 'loop', 'kmsg', 'squashfs-tools'), async (t) => {
  const image = await buildCorruptImage('restart')
  t.teardown(() => removeImage(image))
  const mounted = await mountImage(image)
  t.teardown(() => mounted.detach())
  const head = await startHeadStub()
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
      '--cache-dir', image.cacheDir, '--heartbeat-interval', '0'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'info' } })
    child.stderr?.resume()
    children.add(child)
    child.on('exit', () => children.delete(child))
    return child
  }
  const exited = (c: ChildProcess): Promise<void> => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())))

  let daemon = startDaemon()
  let kills = 0
  let deliveredBeforeKill = 0
  for (let round = 1; round <= ROUNDS; round++) {
    await readEverything(mounted.mountpoint)
    if (round === KILL_AFTER_ROUND) {
      // Mid-flood: the first daemon has delivered some events, and is reading
      // and coalescing a fresh burst when it is killed.
      deliveredBeforeKill = (await waitFor(() => head.events().length, 10_000)) ?? 0
      await readEverything(mounted.mountpoint)
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

  const kernelEvents = () => head.events().filter((e) => (e.kind === 'squashfs-error' || e.kind === 'io-error') &&
    (e.data.kmsg as { bootId?: string } | undefined)?.bootId === boot)
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
  }, 15_000, 100)
  daemon.kill('SIGTERM')
  await exited(daemon)

  const seqs = covered().filter((s) => s > startSeq && s <= endSeq)
  const dupes = seqs.filter((s, i) => seqs.indexOf(s) !== i)
  t.ok(all, 'every kernel error record of the run reached the head node (no gap)')
  t.same(dupes, [], 'no record is covered by two stored events (no duplicate)')
  t.same([...new Set(seqs)].sort((a, b) => a - b), expected, 'the stored seq ranges are exactly the kernel error records')
  const counted = kernelEvents().reduce((n, e) => n + Number(e.data.count), 0)
  t.equal(counted, covered().length, 'event counts agree with their seq ranges')
  t.equal(kills, 1)
  t.ok(deliveredBeforeKill > 0, `the first daemon had delivered ${deliveredBeforeKill} event(s) before it was killed`)
  t.ok(kernelEvents().length > deliveredBeforeKill, 'the restarted daemon delivered the rest')
  t.comment(`${expected.length} error records, ${kernelEvents().length} events, ${head.received().length - head.events().length} resent duplicate(s) dropped by id at the head`)
})
