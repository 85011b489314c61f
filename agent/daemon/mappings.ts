/**
 * When each loop device was bound to the file it reads now, in the kernel
 * log's own clock (microseconds since boot), so that a record logged before
 * that is never tied to the file bound now (#22 finding 6: a daemon reading a
 * boot's whole log blamed 455 errors of images long unmounted on the image
 * mounted when it read them).
 *
 * Why the kernel log, and not sysfs or the mount table: binding a file to a
 * loop device (LOOP_CONFIGURE / LOOP_SET_FD) sets the disk's capacity from 0,
 * and the block layer logs exactly that (block/genhd.c,
 * set_capacity_and_notify: "loopN: detected capacity change from 0 to N"),
 * while detaching sets it back to 0 without a line — so every binding is a
 * record, stamped by the same clock as the errors. Neither /sys/block/loopN
 * (the device exists from boot, whatever it is bound to) nor the times of its
 * sysfs files (set when the inode is first looked up) nor /proc/self/mountinfo
 * (no time at all) says when the current binding was made.
 *
 * The daemon reads the whole ring once at start ({@link prescanMappings}) so
 * that it knows the latest binding of each device before it reads old
 * records, and notes every binding it reads afterwards. When the line of a
 * binding is no longer in the ring (overwritten on a long-running, noisy
 * node), the daemon's own first sight stands in for it: the newest record
 * when it first saw the device bound. That is later than the real binding,
 * so records in between are reported without an image — never with a wrong
 * one.
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { system } from '../core/system.js'
import { readKmsg, type KmsgReaderOptions, type KmsgRecord } from './kmsg.js'

const LOOP_BOUND = /^(loop\d{1,6}): detected capacity change from 0 to [1-9]\d*$/

/** The loop device a record says was just bound to a file, when it says so (kernel records only). */
export const loopBoundBy = (r: Pick<KmsgRecord, 'facility' | 'message'>): string | undefined =>
  r.facility === 0 ? LOOP_BOUND.exec(r.message.trim())?.[1] : undefined

const seconds = (usec: number): string => (usec / 1e6).toFixed(6)

export class MappingTimes {
  /** device → usec of the latest binding line read. */
  private readonly bound = new Map<string, number>()
  /** device → usec of the newest record read when the daemon first saw it bound without knowing when. */
  private readonly firstSeen = new Map<string, number>()
  /** The newest record read so far (its usec). */
  private newest = 0

  /** Takes note of a record read (at start or later): a binding moves that device's time on. */
  note(r: KmsgRecord): void {
    if (r.usec > this.newest) this.newest = r.usec
    const dev = loopBoundBy(r)
    if (dev) this.bound.set(dev, Math.max(r.usec, this.bound.get(dev) ?? 0))
  }

  /** Devices seen bound now whose binding line was not read: first seen at the newest record. */
  seenBound(devices: Iterable<string>): void {
    for (const d of devices) if (!this.bound.has(d) && !this.firstSeen.has(d)) this.firstSeen.set(d, this.newest)
  }

  /**
   * Why a record logged at `usec` cannot be tied to the file `device` is
   * bound to now, or undefined when it can.
   */
  predates(device: string, usec: number): string | undefined {
    const at = this.bound.get(device)
    if (at !== undefined) {
      return usec < at ? `logged at ${seconds(usec)} s, before ${device} was bound to its current file (${seconds(at)} s)` : undefined
    }
    this.seenBound([device]) // met now for the first time: only later records are its own
    const seen = this.firstSeen.get(device) ?? this.newest
    return usec <= seen
      ? `logged at ${seconds(usec)} s, before ${device} was known bound to its current file (its binding is no longer in the kernel log; first seen at ${seconds(seen)} s)`
      : undefined
  }
}

/** Loop devices bound to a file now (/sys/block/loopN/loop exists only while bound). */
export const boundLoopDevices = async (sysBlock = system.sysBlock): Promise<string[]> => {
  const names = (await readdir(sysBlock).catch(() => [] as string[])).filter((n) => /^loop\d{1,6}$/.test(n))
  const bound = await Promise.all(names.map(async (n) => ((await readdir(join(sysBlock, n, 'loop')).catch(() => undefined)) ? n : undefined)))
  return bound.filter((n): n is string => n !== undefined)
}

/** Most time the start-up read of the ring may take (it stops at the ring's end, normally within ~100 ms). */
export const PRESCAN_DEADLINE_MS = 5_000

/**
 * Reads the whole ring once (its end is the first EAGAIN) and notes every
 * binding in it; then marks the devices bound now whose binding line is gone.
 */
export const prescanMappings = async (
  times: MappingTimes,
  opts: Pick<KmsgReaderOptions, 'path' | 'openDevice'> & { signal?: AbortSignal; sysBlock?: string },
): Promise<{ records: number }> => {
  const deadline = AbortSignal.timeout(PRESCAN_DEADLINE_MS)
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline
  let records = 0
  for await (const item of readKmsg({ ...(opts.path ? { path: opts.path } : {}), ...(opts.openDevice ? { openDevice: opts.openDevice } : {}), signal })) {
    if (item.type === 'record') {
      times.note(item.record)
      records++
    } else if (item.type === 'idle' || (item.type === 'malformed' && item.raw.startsWith('cannot open')) || (item.type === 'opened' && item.reason !== 'start')) {
      break
    }
  }
  times.seenBound(await boundLoopDevices(opts.sysBlock))
  return { records }
}
