/**
 * The node daemon (SPEC §9): reads /dev/kmsg, classifies and correlates
 * kernel errors, coalesces floods, spools events durably, delivers them (and
 * what the boot stage spooled), re-verifies cache objects that squashfs
 * complained about, and sends status heartbeats.
 *
 * Exactly-once across restarts, and why it holds:
 *  - The coalescer is drained whole: after a flush, every kernel error with
 *    seq ≤ the last record read is in an event in the spool.
 *  - A flush is committed with a redo record: first its events and the new
 *    position are written durably to kmsg-flush.json (the commit point), then
 *    the events are spooled one by one, then the position file moves, then
 *    the redo record goes. A crash anywhere after the commit point is finished
 *    at the next start (events not yet in the spool are appended again — same
 *    ids, same contents — and the position moves); a crash before it leaves
 *    nothing spooled and the records are simply read again.
 *  - All of that happens under one lock that the sender also takes to remove
 *    delivered events, so no event can leave the spool while its flush is
 *    uncommitted (the sender may POST it meanwhile: it is then resent, with
 *    the same id, and the head node keeps one copy).
 *  - Records are never re-read past the position, so none is reported twice;
 *    none is skipped that was not spooled, so there is no gap. Event ids are
 *    also derived from (boot id, key, first seq): a replay of the same records
 *    makes the same ids.
 * Between flushes the position is persisted in batches (every
 * POSITION_EVERY_RECORDS records or POSITION_EVERY_MS) when nothing is
 * pending; losing that on a crash only means re-reading records that
 * classify to nothing.
 */
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Logger } from '../core/log.js'
import { silentLogger } from '../core/log.js'
import { messageOf } from '../core/errors.js'
import { system } from '../core/system.js'
import { makeEvent, type AgentEvent } from '../protocol/event.js'
import type { SelfCheckData } from '../protocol/payloads.js'
import { Spool } from '../events/spool.js'
import { Coalescer, stableId } from '../events/coalesce.js'
import { Sender } from '../events/sender.js'
import { Mutex } from '../events/mutex.js'
import { readKmsg, type KmsgReaderOptions, type KmsgRecord } from './kmsg.js'
import { classify } from './classify.js'
import { kernelErrorEntry } from './kernel-entry.js'
import { Correlator, type ObjectRef } from './correlate.js'
import { MappingTimes, prescanMappings } from './mappings.js'
import { parseObjectPath } from './object-meta.js'
import { SelfChecker, type SelfCheckResult } from './self-check.js'
import { collectStatus } from './heartbeat.js'
import { logEvents } from './event-lines.js'
import { emptyBootTrash } from './trash.js'
import { formatMountChain, readMountChain } from './mount-chain.js'
import type { BootRecordView } from './boot-record.js'
import { type DaemonObserver, Observers } from './observer.js'
import { clearFlushIntent, readFlushIntent, readPosition, writeFlushIntent, writePosition, writeHeartbeat, SPOOL_SUBDIR, type KmsgPosition } from './state.js'

export const COALESCE_WINDOW_MS = 1_000
/**
 * Flush early when this many records are held: keeps each coalesced event
 * (its seq ranges) well under a head node's per-event size limit (64 KiB in
 * the reference head), even when classes interleave record by record.
 */
export const MAX_PENDING_RECORDS = 1_000
export const POSITION_EVERY_RECORDS = 1_000
export const POSITION_EVERY_MS = 10_000
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5 * 60_000

export interface DaemonOptions {
  node: string
  /** Head node base URL; without it events stay spooled. */
  server?: string
  /** State dir: kmsg position, heartbeat, the daemon's spool. */
  stateDir: string
  /** Cache directories whose objects are this node's. */
  cacheDirs?: string[]
  bootRecord?: BootRecordView
  /** Extra spools to drain (the boot stage's spoolDir), delivered before the daemon's own. */
  extraSpoolDirs?: string[]
  /** Most events in the daemon's spool. Default: Spool's default (10,000). */
  spoolMaxEvents?: number
  /** kmsg device path. Default system.devKmsg. */
  kmsgPath?: string
  /** Opens the kernel log device (tests inject a scripted one; default: O_RDONLY|O_NONBLOCK). */
  openKmsg?: KmsgReaderOptions['openDevice']
  /** Poll interval when the kernel log has nothing new. Default 200 ms. */
  pollMs?: number
  /** Coalescing window. Default 1 s. */
  coalesceWindowMs?: number
  /** Heartbeat every this many ms; 0 disables. Default 5 minutes. */
  heartbeatIntervalMs?: number
  /** Re-verify objects squashfs complained about. Default true. */
  selfCheck?: boolean
  /** At most one self-check per object in this window. */
  selfCheckIntervalMs?: number
  /** Read what the kernel log holds now, flush, deliver once, and return. */
  once?: boolean
  /** Called once the daemon has resumed its position and reads the kernel log (READY=1, notify.ts). */
  onReady?: () => void
  /** Empty an overlay boot's trash (the boot record's root.trash) in the background. Default true. */
  emptyTrash?: boolean
  /** Bearer token for the head node, when it wants one. */
  token?: string
  /** Sender tuning (tests). */
  senderOptions?: { minBackoffMs?: number; maxBackoffMs?: number; batchSize?: number; requestTimeoutMs?: number }
  /** Interval of the sender's flush when nothing wakes it. Default 5 s. */
  sendIntervalMs?: number
  /** Told of the boot, the spooled events and the end (the Slurm drain, the metrics textfile). */
  observers?: DaemonObserver[]
  log?: Logger
  signal: AbortSignal
}

export interface DaemonResult {
  recordsRead: number
  errorsSeen: number
  eventsSpooled: number
  kmsgLost: number
  malformed: number
  lastSeq: number | undefined
  /** Delivery failed at the end of a --once run. */
  deliveryError?: string
}

const readBootId = async (): Promise<string> => (await readFile(system.bootId, 'utf8')).trim()

const readUptimeMs = async (): Promise<number> => {
  const first = (await readFile(system.procUptime, 'utf8')).split(' ')[0] ?? '0'
  return Number(first) * 1000
}

/**
 * Finishes a flush a crash interrupted (see the module comment): spools
 * whichever of its events the spool lacks and moves the position. Returns the
 * number of events it had to spool again.
 */
export const recoverFlush = async (stateDir: string, spool: Spool, log: Logger): Promise<number> => {
  const intent = await readFlushIntent(stateDir)
  if (!intent) return 0
  const have = new Set((await spool.files()).map((f) => f.slice(-41, -5)))
  const missing = intent.events.filter((e) => !have.has(e.id))
  if (missing.length) await spool.append(...missing)
  const saved = await readPosition(stateDir)
  if (!(saved && saved.bootId === intent.bootId && saved.seq >= intent.seq)) {
    await writePosition(stateDir, { bootId: intent.bootId, seq: intent.seq, lost: intent.lost, time: new Date().toISOString() })
  }
  await clearFlushIntent(stateDir)
  log.warn({ events: intent.events.length, respooled: missing.length, seq: intent.seq }, 'finished a flush interrupted by a crash')
  return missing.length
}

export const runDaemon = async (opts: DaemonOptions): Promise<DaemonResult> => {
  const log = opts.log ?? silentLogger()
  const signal = opts.signal
  const stateDir = resolve(opts.stateDir)
  const node = opts.node
  const lock = new Mutex()
  const spool = new Spool(join(stateDir, SPOOL_SUBDIR), opts.spoolMaxEvents ? { maxEvents: opts.spoolMaxEvents } : {})
  await spool.init()
  const extra = (opts.extraSpoolDirs ?? []).map((d) => resolve(d)).filter((d) => d !== spool.dir)
  const spools = [...extra.map((d) => new Spool(d)), spool]
  const cacheDirs = [...(opts.cacheDirs ?? [])]
  // The boot stage's cache: its mountpoint, or (cache in RAM) the dir holding the booted object.
  const brCache = opts.bootRecord?.cache
  const objDir = brCache?.objectPath ? parseObjectPath(brCache.objectPath)?.cacheDir : undefined
  for (const d of [brCache?.mountpoint, objDir]) if (d && !cacheDirs.includes(d)) cacheDirs.push(d)
  // When each loop device was bound, so that no record is tied to a file bound after it was logged (mappings.ts).
  const mappings = new MappingTimes()
  const correlator = new Correlator({ bootRecord: opts.bootRecord, cacheDirs, mappings })
  const result: DaemonResult = { recordsRead: 0, errorsSeen: 0, eventsSpooled: 0, kmsgLost: 0, malformed: 0, lastSeq: undefined }

  const bootId = await readBootId()
  const bootEpochMs = Date.now() - (await readUptimeMs())
  const recovered = await recoverFlush(stateDir, spool, log)
  const saved = await readPosition(stateDir)
  const sameBoot = saved?.bootId === bootId
  const afterSeq = sameBoot ? saved.seq : undefined
  let kmsgLost = sameBoot ? saved.lost : 0
  log.info({ op: 'resume', bootId, afterSeq: afterSeq ?? null, sameBoot, recoveredFlush: recovered },  afterSeq === undefined ? 'reading the whole kernel log of this boot' : `resuming the kernel log after seq ${afterSeq}`)
  opts.onReady?.()

  const observers = new Observers(opts.observers ?? [], log)
  await observers.start({ node, bootId, stateDir, ...(opts.bootRecord ? { bootRecord: opts.bootRecord } : {}), stats: async () => ({ kmsgLost, spooled: (await spool.files()).length, lostEvents: await spool.lostCount(), errorsByKind: { ...observers.errorsByKind } }) })
  let position: KmsgPosition = { bootId, seq: afterSeq ?? -1, lost: kmsgLost, time: new Date().toISOString() }
  let positionWrittenAt = Date.now()
  let lastSeq = afterSeq
  const coalescer = new Coalescer()
  let windowStart: number | undefined
  const pendingExtra: AgentEvent[] = []
  let sender: Sender | undefined

  const spoolEvents = async (events: AgentEvent[]): Promise<void> => {
    if (!events.length) return
    await spool.append(...events)
    result.eventsSpooled += events.length
    observers.events(events)
    sender?.wake()
  }

  /** Spools everything pending and moves the position to the last record read, as one step under the lock. */
  const flush = async (): Promise<void> => {
    // Drain and take the position in one synchronous step: a record handled
    // after this point is neither in these events nor below this position.
    const events = [...pendingExtra.splice(0), ...coalescer.drain(node, bootId)]
    windowStart = undefined
    const seq = lastSeq ?? position.seq
    const lost = kmsgLost
    if (!events.length && seq === position.seq) return
    await lock.run(async () => {
      const next: KmsgPosition = { bootId, seq: Math.max(seq, position.seq), lost: Math.max(lost, position.lost), time: new Date().toISOString() }
      if (events.length) {
        await writeFlushIntent(stateDir, { bootId, seq: next.seq, lost: next.lost, events })
        await spool.append(...events)
        result.eventsSpooled += events.length
      }
      position = next
      await writePosition(stateDir, position)
      positionWrittenAt = Date.now()
      if (events.length) await clearFlushIntent(stateDir)
    })
    if (events.length) {
      observers.events(events)
      log.info({ op: 'flush', events: events.length, kinds: [...new Set(events.map((e) => e.kind))], seq: lastSeq }, `spooled ${events.length} event(s)`)
      logEvents(log, events)
      sender?.wake()
    }
  }

  const onSelfCheck = async (r: SelfCheckResult): Promise<void> => {
    const image = { sha256: r.object.sha256, ...(r.name ? { name: r.name } : {}) }
    const check: SelfCheckData = {
      source: 'self-check',
      what: 'cache-object',
      objectPath: r.object.path,
      chunksChecked: r.chunksChecked,
      badChunks: r.bad,
      corruptChunks: r.corruptChunks,
      durationMs: r.durationMs,
    }
    const event = r.error
      ? makeEvent('cache', node, { ...check, action: 'self-check-failed', error: r.error }, { image })
      : r.ok
        ? makeEvent('cache', node, { ...check, action: 'verified' }, { image })
        : r.corruptChunks.length
          ? makeEvent('integrity', node, { ...check, reason: r.reason, action: 'marked-corrupt', repair: 'the next fetch (next boot) re-downloads corruptChunks only' }, { image })
          : makeEvent('integrity', node, { ...check, reason: r.reason, action: 'corrupt-unlocated', repair: 'the next fetch re-verifies the object and re-downloads what fails' }, { image })
    await lock.run(() => spoolEvents([event])).catch((e: unknown) => log.error({ err: messageOf(e) }, 'cannot spool the self-check result'))
    logEvents(log, [event])
  }

  const selfChecker = opts.selfCheck === false ? undefined : new SelfChecker({
    log,
    onResult: onSelfCheck,
    signal,
    ...(opts.selfCheckIntervalMs !== undefined ? { minIntervalMs: opts.selfCheckIntervalMs } : {}),
  })

  const heartbeat = async (): Promise<void> => {
    try {
      const data = await collectStatus({
        bootRecord: opts.bootRecord,
        cacheDirs,
        daemon: { kmsgSeq: position.seq, kmsgLost, spooled: (await spool.files()).length, lostEvents: await spool.lostCount(), pid: process.pid },
      })
      const image = opts.bootRecord?.image?.sha256 ? { sha256: opts.bootRecord.image.sha256, ...(opts.bootRecord.image.name ? { name: opts.bootRecord.image.name } : {}) } : undefined
      const event = makeEvent('status', node, data, image ? { image } : {})
      await lock.run(() => spoolEvents([event]))
      await writeHeartbeat(stateDir, { time: event.time, eventId: event.id, data })
    } catch (e) {
      log.error({ err: messageOf(e) }, 'heartbeat failed')
    }
  }

  // Delivery runs beside the reader; it stops with the daemon.
  const stopSender = new AbortController()
  const senderSignal = AbortSignal.any([signal, stopSender.signal])
  let senderLoop: Promise<void> | undefined
  if (opts.server) {
    sender = new Sender({ server: opts.server, node, spools, log, lock, ...(opts.token ? { token: opts.token } : {}), ...(opts.senderOptions ?? {}) })
    if (!opts.once) senderLoop = sender.run({ signal: senderSignal, intervalMs: opts.sendIntervalMs ?? 5_000 })
  }

  let heartbeatTimer: NodeJS.Timeout | undefined
  const hbMs = opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS
  let firstHeartbeat: Promise<void> | undefined
  if (hbMs > 0) {
    firstHeartbeat = heartbeat()
    if (!opts.once) heartbeatTimer = setInterval(() => void heartbeat(), hbMs)
  }

  const handle = async (record: KmsgRecord): Promise<void> => {
    const c = classify(record)
    if (!c) return
    result.errorsSeen++
    const corr = await correlator.correlate(c, record.usec)
    windowStart ??= Date.now()
    coalescer.add(kernelErrorEntry(c, corr, record, bootEpochMs))
    // A sealed object's block refused by fs-verity: the self-check finds its chunks (they read as EIO) and marks them.
    if (selfChecker && (c.kind === 'squashfs-error' || c.source === 'fsverity')) {
      const objects: ObjectRef[] = corr.object ? [corr.object] : (corr.candidates ?? []).flatMap((x) => (x.object ? [x.object] : []))
      for (const o of objects) if (selfChecker.request(o)) log.info({ sha256: o.sha256, path: o.path }, `${c.source === 'fsverity' ? 'fs-verity' : 'squashfs'} errors on a cached image: re-verifying it in the background`)
    }
  }

  const maybeFlush = async (force: boolean): Promise<void> => {
    const due = windowStart !== undefined && Date.now() - windowStart >= (opts.coalesceWindowMs ?? COALESCE_WINDOW_MS)
    if (force || due || coalescer.pending >= MAX_PENDING_RECORDS || pendingExtra.length > 0 && coalescer.pending === 0) {
      await flush()
      return
    }
    // Batched position: only when nothing is held back (see the module comment).
    if (coalescer.pending === 0 && lastSeq !== undefined && lastSeq !== position.seq &&
      (lastSeq - position.seq >= POSITION_EVERY_RECORDS || Date.now() - positionWrittenAt >= POSITION_EVERY_MS)) await flush()
  }

  // An overlay boot's old layers, renamed into the trash by the boot stage: deleted beside the reader, at idle I/O priority.
  const trashDone = opts.emptyTrash === false ? undefined : emptyBootTrash(opts.bootRecord, { log, signal })
  void readMountChain(opts.bootRecord?.root?.sysroot ? [opts.bootRecord.root.sysroot] : []).then((c) => c && log.info({ op: 'root', ...c }, `root: ${formatMountChain(c)}`), () => undefined)

  const kmsgPath = opts.kmsgPath ?? system.devKmsg
  const prescan = await prescanMappings(mappings, { path: kmsgPath, ...(opts.openKmsg ? { openDevice: opts.openKmsg } : {}), signal })
  log.debug({ op: 'prescan', records: prescan.records }, 'read the ring once for the loop devices\' binding times')
  try {
    for await (const item of readKmsg({
      path: kmsgPath,
      ...(afterSeq !== undefined ? { afterSeq } : {}),
      reportInitialGap: true,
      ...(opts.openKmsg ? { openDevice: opts.openKmsg } : {}),
      ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
      signal,
    })) {
      try {
        switch (item.type) {
          case 'record':
            result.recordsRead++
            mappings.note(item.record)
            await handle(item.record)
            lastSeq = item.record.seq
            break
          case 'lost': {
            kmsgLost += item.count
            result.kmsgLost += item.count
            const why = afterSeq === undefined && item.fromSeq === 0 ? 'overwritten before the daemon first read this boot\'s log' : 'kernel log ring overrun (EPIPE) or overwritten while the daemon was down'
            log.warn({ count: item.count, fromSeq: item.fromSeq, toSeq: item.toSeq }, `${item.count} kernel log record(s) lost: ${why}`)
            pendingExtra.push(makeEvent('lost', node, { source: 'kmsg', count: item.count, fromSeq: item.fromSeq, toSeq: item.toSeq, reason: why, kmsg: { bootId, firstSeq: item.fromSeq, lastSeq: item.toSeq } }, { id: stableId('kmsg-lost', bootId, item.fromSeq) }))
            break
          }
          case 'malformed':
            result.malformed++
            log.warn({ raw: item.raw }, 'kernel log record not understood; skipped')
            break
          case 'opened':
            if (item.reason !== 'start') log.warn({ reason: item.reason }, 'reopened the kernel log')
            break
          case 'idle':
            break
        }
        await maybeFlush(item.type === 'idle' && opts.once === true)
        if (item.type === 'idle' && coalescer.pending === 0) observers.caughtUp() // all read so far is spooled: observers may judge this boot
      } catch (e) {
        // Never die on one record: log, keep reading.
        log.error({ err: messageOf(e), item: item.type }, 'failed to handle a kernel log item')
      }
      if (item.type === 'idle' && opts.once) break
    }
  } finally {
    clearInterval(heartbeatTimer)
    await flush().catch((e: unknown) => log.error({ err: messageOf(e) }, 'final flush failed'))
    result.lastSeq = lastSeq
    await firstHeartbeat
    await observers.stop()
    if (opts.once) {
      await selfChecker?.idle()
      await trashDone
      if (sender) {
        try {
          const r = await sender.flushOnce(signal)
          log.info({ ...r }, 'events delivered')
        } catch (e) {
          result.deliveryError = messageOf(e)
          log.warn({ err: messageOf(e) }, 'delivery failed; events stay spooled')
        }
      }
    } else {
      // One last delivery attempt with a short deadline, then stop.
      stopSender.abort()
      await senderLoop
      await trashDone // stopped by the same signal (the entry being deleted stays for the next run)
    }
  }
  return result
}
