/**
 * The daemon's observer seam, with a scripted kernel log (as daemon.test.ts):
 * observers hear the start, the spooled events, the moment the log is caught
 * up (after those events), and the stop; errors are counted by kind; an
 * observer that throws stops nothing.
 */
import t from 'tap'
import { runDaemon } from '../../agent/daemon/daemon.js'
import type { DaemonObserver, DaemonStats } from '../../agent/daemon/observer.js'

const ring = (records: string[]) => async () => {
  const steps = [...records]
  return {
    read: async (buf: Buffer) => {
      const s = steps.shift()
      if (s === undefined) throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' })
      return { bytesRead: buf.write(s), buffer: buf }
    },
    close: async () => undefined,
  }
}
const sq = (seq: number) => `3,${seq},${seq * 1000},-;SQUASHFS error: xz decompression failed, data probably corrupt\n`

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
