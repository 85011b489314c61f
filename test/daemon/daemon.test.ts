/**
 * runDaemon with a scripted kernel log (the real one cannot be made to
 * overrun or to hold chosen records on demand, nor a crash be placed at a
 * chosen step; real-kernel.test.ts uses the real /dev/kmsg). Boot id and
 * uptime are this machine's.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runDaemon } from '../../agent/daemon/daemon.js'
import { readFlushIntent, readPosition, writeFlushIntent, writePosition } from '../../agent/daemon/state.js'
import { Spool } from '../../agent/events/spool.js'
import { makeEvent, type AgentEvent } from '../../agent/protocol/event.js'
import type { DaemonObserver, DaemonStats } from '../../agent/daemon/observer.js'

const bootId = async (): Promise<string> => (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()

/** A device that returns `records` (then EAGAIN), restarting from the first on each open, like /dev/kmsg. */
const ring = (records: (string | { code: string })[]) => async () => {
  const steps = [...records]
  return {
    read: async (buf: Buffer) => {
      const s = steps.shift()
      if (s === undefined) throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' })
      if (typeof s !== 'string') throw Object.assign(new Error(s.code), { code: s.code })
      return { bytesRead: buf.write(s), buffer: buf }
    },
    close: async () => undefined,
  }
}

const spooled = async (dir: string): Promise<AgentEvent[]> => {
  const s = new Spool(join(dir, 'spool'))
  return (await s.peekFiles(await s.files())).map((x) => x.event)
}

const sq = (seq: number) => `3,${seq},${seq * 1000},-;SQUASHFS error: xz decompression failed, data probably corrupt\n`

t.test('kernel errors are coalesced and spooled with the position moved past them; user records and noise are ignored', async (t) => {
  const dir = t.testdir()
  const res = await runDaemon({
    node: 'n1', stateDir: dir, once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal,
    openKmsg: ring([sq(0), sq(1), '14,2,3,-;SQUASHFS error: written by a process\n', '6,3,4,-;loop0: detected capacity change\n', 'not a record', sq(4)]),
  })
  t.match(res, { recordsRead: 5, errorsSeen: 3, malformed: 1, lastSeq: 4 })
  const evs = await spooled(dir)
  t.equal(evs.length, 1)
  t.match(evs[0]?.data, { class: 'decompression-failed', count: 3, kmsg: { firstSeq: 0, lastSeq: 4, seqs: [[0, 1], [4, 4]] } })
  t.equal((await readPosition(dir))?.seq, 4)
})

t.test('an overrun becomes a lost event with the number of records missed', async (t) => {
  const dir = t.testdir()
  await runDaemon({
    node: 'n1', stateDir: dir, once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal,
    openKmsg: ring([sq(0), { code: 'EPIPE' }, sq(40), sq(41)]),
  })
  const lost = (await spooled(dir)).filter((e) => e.kind === 'lost')
  t.equal(lost.length, 1)
  t.match(lost[0]?.data, { source: 'kmsg', count: 39, fromSeq: 1, toSeq: 39 })
  t.equal((await readPosition(dir))?.lost, 39)
})

t.test('records before the resume point are not reported again; ring records overwritten meanwhile are counted', async (t) => {
  const dir = t.testdir()
  await writePosition(dir, { bootId: await bootId(), seq: 5, lost: 0, time: '' })
  await runDaemon({
    node: 'n1', stateDir: dir, once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal,
    openKmsg: ring([sq(8), sq(9)]),
  })
  const evs = await spooled(dir)
  t.match(evs.find((e) => e.kind === 'lost')?.data, { count: 2, fromSeq: 6, toSeq: 7 })
  t.match(evs.find((e) => e.kind === 'squashfs-error')?.data, { count: 2, kmsg: { firstSeq: 8, lastSeq: 9 } })
})

for (const [when, alreadySpooled] of [['after the commit point, before any event was spooled', 0], ['half-way through spooling', 1]] as const) {
  t.test(`a flush interrupted ${when} is finished at start: its records are neither lost nor reported twice`, async (t) => {
    const dir = t.testdir()
    const boot = await bootId()
    await writePosition(dir, { bootId: boot, seq: 10, lost: 0, time: '' })
    // The crashed run's flush: two events covering 11..20, committed (redo record written), position still 10.
    const evs = [
      makeEvent('squashfs-error', 'n1', { count: 5, kmsg: { bootId: boot, firstSeq: 11, lastSeq: 19, seqs: [[11, 11], [13, 13], [15, 15], [17, 17], [19, 19]] } }),
      makeEvent('squashfs-error', 'n1', { count: 5, kmsg: { bootId: boot, firstSeq: 12, lastSeq: 20, seqs: [[12, 12], [14, 14], [16, 16], [18, 18], [20, 20]] } }),
    ]
    await writeFlushIntent(dir, { bootId: boot, seq: 20, lost: 0, events: evs })
    if (alreadySpooled) await new Spool(join(dir, 'spool')).append(...evs.slice(0, alreadySpooled))
    const records = Array.from({ length: 15 }, (_, i) => sq(11 + i))
    const res = await runDaemon({
      node: 'n1', stateDir: dir, once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal, openKmsg: ring(records),
    })
    t.equal(res.errorsSeen, 5, 'only 21..25 are read as new')
    const spooledNow = await spooled(dir)
    t.same(spooledNow.filter((e) => evs.some((x) => x.id === e.id)).map((e) => e.id).sort(), evs.map((e) => e.id).sort(), 'each event of the interrupted flush is spooled exactly once')
    const covered = spooledNow.flatMap((e) => (e.data as { kmsg: { seqs: [number, number][] } }).kmsg.seqs).flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => a + i)).sort((a, b) => a - b)
    t.same(covered, Array.from({ length: 15 }, (_, i) => 11 + i), 'seqs 11..25 covered once each')
    t.equal(await readFlushIntent(dir), undefined, 'the redo record is gone')
  })
}

t.test('a position from another boot is not used (seq restarts every boot)', async (t) => {
  const dir = t.testdir()
  await writePosition(dir, { bootId: 'another-boot', seq: 500, lost: 7, time: '' })
  const res = await runDaemon({
    node: 'n1', stateDir: dir, once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal, openKmsg: ring([sq(0), sq(1)]),
  })
  t.equal(res.errorsSeen, 2)
  t.match(await readPosition(dir), { bootId: await bootId(), seq: 1, lost: 0 })
})

// The observer seam (the Slurm drain and the metrics textfile hang on it): observers hear the start,
// the spooled events, the moment the log is caught up (after those events) and the stop; an observer that throws stops nothing.
t.test('observers hear start, the spooled kernel errors, caught-up after them, and stop; errors are counted by kind', async (t) => {
  const heard: string[] = []
  let stats: DaemonStats | undefined
  const watcher: DaemonObserver = {
    start: async (ctx) => {
      heard.push(`start:${ctx.node}`)
    },
    events: (evs) => {
      heard.push(...evs.map((e) => `event:${e.kind}`))
    },
    caughtUp: () => {
      heard.push('caught-up')
    },
    stop: async () => {
      heard.push('stop')
    },
  }
  let ctxStats: (() => Promise<DaemonStats>) | undefined
  const grab: DaemonObserver = { start: async (ctx) => void (ctxStats = ctx.stats), stop: async () => void (stats = await ctxStats?.()) }
  const broken: DaemonObserver = {
    start: async () => {
      throw new Error('observer bug')
    },
    events: () => {
      throw new Error('observer bug')
    },
  }
  const res = await runDaemon({
    node: 'n1', stateDir: t.testdir(), once: true, heartbeatIntervalMs: 0, selfCheck: false, signal: new AbortController().signal,
    openKmsg: ring([sq(0), sq(1), sq(2)]), observers: [broken, watcher, grab],
  })
  t.match(res, { recordsRead: 3, errorsSeen: 3 }, 'a throwing observer stopped nothing')
  t.same(heard, ['start:n1', 'event:squashfs-error', 'caught-up', 'stop'])
  t.match(stats, { errorsByKind: { 'squashfs-error': 3, 'io-error': 0, integrity: 0 }, spooled: 1 }, 'three records counted, one event spooled')
})
