/**
 * Reads the kernel log through /dev/kmsg, one record per read(2), as the
 * kernel documents it in Documentation/ABI/testing/dev-kmsg:
 *
 *   "<prio>,<seq>,<usec>,<flags>[,<more fields>];<message>\n"
 *   followed by dictionary lines " KEY=value\n" (e.g. " SUBSYSTEM=block", " DEVICE=b7:0")
 *
 * - prio packs facility and level: facility = prio >> 3, level = prio & 7.
 *   Only facility 0 (LOG_KERN) records come from the kernel; anything a
 *   process wrote into /dev/kmsg has facility 1 (user) or what it asked for.
 * - seq is a 64-bit sequence number that grows by one per record; a gap means
 *   records were overwritten before we read them (the read that notices it
 *   fails with EPIPE, the next one returns the oldest record still there).
 * - flags: '-' a whole record, 'c' the start of a continued line, '+' a
 *   continuation fragment (older kernels).
 * - non-printable bytes in the message and in dictionary values are escaped
 *   as \xNN.
 *
 * Why polling: libuv gives no readiness notification for a character device
 * (fs.watch does not fire on /dev/kmsg, net.Socket refuses the fd), and a
 * blocking read parked in the threadpool cannot be cancelled, so an aborted
 * daemon would hang until the next kernel message. So the fd is opened
 * O_NONBLOCK, each read returns a record or EAGAIN at once, and on EAGAIN
 * the reader sleeps POLL_MS (abortable) before trying again. Reading never
 * blocks the event loop, and abort ends the loop within one poll.
 */
import { open, type FileHandle } from 'node:fs/promises'
import { constants } from 'node:fs'
import { sleep } from '../core/clock.js'
import { isErrno } from '../core/errors.js'

/** The kernel's facility number (prio >> 3); 0 is the kernel itself. */
export const FACILITY_KERNEL = 0
/** A kmsg record is at most 8 KiB (CONSOLE_EXT_LOG_MAX); a smaller buffer makes read(2) fail with EINVAL. */
export const KMSG_READ_BUFFER_BYTES = 16 * 1024
export const DEFAULT_POLL_MS = 200
/** Wait before reopening /dev/kmsg after it closed or failed (node-problem-detector #1168). */
export const REOPEN_DELAY_MS = 1_000

export interface KmsgRecord {
  /** Syslog facility (0 = kernel, 1 = user, …). */
  facility: number
  /** Syslog level (0 = emerg … 3 = err, 4 = warning … 7 = debug). */
  level: number
  seq: number
  /** Microseconds since boot (the kernel's local clock). */
  usec: number
  /** '-' whole record, 'c' continued line starts, '+' continuation fragment. */
  flags: string
  /** The message with \xNN escapes decoded. */
  message: string
  /** Dictionary (KEY=value lines), e.g. SUBSYSTEM=block, DEVICE=b7:0. */
  dict: Record<string, string>
}

const HEX = /^[0-9a-fA-F]{2}$/

/** Decodes the kernel's \xNN escapes (bytes, then UTF-8, invalid sequences replaced). */
export const unescapeKmsg = (s: string): string => {
  if (!s.includes('\\x')) return s
  const bytes: number[] = []
  for (let i = 0; i < s.length; ) {
    const hex = s.slice(i + 2, i + 4)
    if (s[i] === '\\' && s[i + 1] === 'x' && HEX.test(hex)) {
      bytes.push(parseInt(hex, 16))
      i += 4
      continue
    }
    const cp = s.codePointAt(i) ?? 0
    const ch = String.fromCodePoint(cp)
    for (const b of Buffer.from(ch, 'utf8')) bytes.push(b)
    i += ch.length
  }
  return Buffer.from(bytes).toString('utf8')
}

const DECIMAL = /^\d{1,20}$/

/**
 * Parses one record as returned by one read(2) of /dev/kmsg. Anything that
 * does not follow the documented shape is `undefined` (the caller counts it),
 * never an exception.
 */
export const parseKmsgRecord = (raw: string): KmsgRecord | undefined => {
  const semi = raw.indexOf(';')
  if (semi <= 0) return undefined
  const fields = raw.slice(0, semi).split(',')
  if (fields.length < 4) return undefined
  const [prioS, seqS, usecS, flagsS] = fields as [string, string, string, string]
  if (!DECIMAL.test(prioS) || !DECIMAL.test(seqS) || !DECIMAL.test(usecS)) return undefined
  const prio = Number(prioS)
  const seq = Number(seqS)
  const usec = Number(usecS)
  // seq above 2^53 cannot be held exactly; no kernel reaches it (one record a ns for 104 days).
  if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(usec) || prio > 0xffff) return undefined
  if (flagsS.length > 1) return undefined
  const rest = raw.slice(semi + 1)
  const lines = rest.split('\n')
  const message = unescapeKmsg(lines[0] ?? '')
  const dict: Record<string, string> = {}
  for (const line of lines.slice(1)) {
    if (!line.startsWith(' ')) continue
    const eq = line.indexOf('=')
    if (eq < 2) continue
    const key = line.slice(1, eq)
    if (!/^[A-Z0-9_]+$/.test(key)) continue
    dict[key] = unescapeKmsg(line.slice(eq + 1))
  }
  return { facility: prio >> 3, level: prio & 7, seq, usec, flags: flagsS || '-', message, dict }
}

export type KmsgItem =
  | { type: 'record'; record: KmsgRecord }
  /** Records overwritten before they were read: the seq gap [fromSeq, toSeq]. */
  | { type: 'lost'; count: number; fromSeq: number; toSeq: number }
  /** A read that did not parse; `raw` is cut to 256 characters. */
  | { type: 'malformed'; raw: string }
  /** Nothing more to read for now: a good moment to flush. */
  | { type: 'idle' }
  /** The device was (re)opened; `reason` says why. */
  | { type: 'opened'; reason: string }

export interface KmsgReaderOptions {
  /** Device path. Default /dev/kmsg. */
  path?: string
  /** Resume point: records with seq ≤ this are skipped. Unset: read the whole ring. */
  afterSeq?: number
  /**
   * Report the records overwritten before the first one read (seq gap from
   * `afterSeq`, or from 0 when reading a boot's ring for the first time).
   */
  reportInitialGap?: boolean
  /** Sleep between polls when no record is waiting. Default 200 ms. */
  pollMs?: number
  /** Stop reading (the generator returns). */
  signal?: AbortSignal
  /** Opens the device (tests inject a scripted one). */
  openDevice?: (path: string) => Promise<Pick<FileHandle, 'read' | 'close'>>
}

const defaultOpen = (path: string): Promise<FileHandle> => open(path, constants.O_RDONLY | constants.O_NONBLOCK)

const pause = async (ms: number, signal?: AbortSignal): Promise<boolean> => {
  try {
    await sleep(ms, signal)
    return true
  } catch {
    return false
  }
}

/**
 * Yields kernel log records in seq order, each once, from `afterSeq` on,
 * forever (until `signal` aborts). Gaps in seq become `lost` items; reads that
 * do not parse become `malformed` items; a closed or failing device is
 * reopened (and records already seen are skipped by seq).
 */
export async function* readKmsg(opts: KmsgReaderOptions = {}): AsyncGenerator<KmsgItem, void, undefined> {
  const path = opts.path ?? '/dev/kmsg'
  const openDevice = opts.openDevice ?? defaultOpen
  const pollMs = opts.pollMs ?? DEFAULT_POLL_MS
  const signal = opts.signal
  let last = opts.afterSeq
  let initial = opts.reportInitialGap ?? false
  const buf = Buffer.alloc(KMSG_READ_BUFFER_BYTES)
  let reason = 'start'
  while (!signal?.aborted) {
    let fh: Pick<FileHandle, 'read' | 'close'>
    try {
      fh = await openDevice(path)
    } catch (e) {
      yield { type: 'malformed', raw: `cannot open ${path}: ${e instanceof Error ? e.message : String(e)}` }
      if (!(await pause(REOPEN_DELAY_MS, signal))) return
      continue
    }
    yield { type: 'opened', reason }
    try {
      while (!signal?.aborted) {
        let n: number
        try {
          n = (await fh.read(buf, 0, buf.length, null)).bytesRead
        } catch (e) {
          if (isErrno(e, 'EAGAIN', 'EWOULDBLOCK')) {
            yield { type: 'idle' }
            if (!(await pause(pollMs, signal))) return
            continue
          }
          // Ring overrun: the next read returns the oldest record left; the seq gap counts the loss.
          if (isErrno(e, 'EPIPE')) continue
          if (isErrno(e, 'EINTR')) continue
          reason = `read failed: ${e instanceof Error ? e.message : String(e)}`
          break
        }
        if (n === 0) {
          reason = 'end of file'
          break
        }
        const raw = buf.toString('utf8', 0, n)
        const record = parseKmsgRecord(raw)
        if (!record) {
          yield { type: 'malformed', raw: raw.slice(0, 256) }
          continue
        }
        if (last !== undefined && record.seq <= last) continue
        const expected = last === undefined ? (initial ? 0 : record.seq) : last + 1
        initial = false
        if (record.seq > expected) yield { type: 'lost', count: record.seq - expected, fromSeq: expected, toSeq: record.seq - 1 }
        last = record.seq
        yield { type: 'record', record }
      }
    } finally {
      await fh.close().catch(() => undefined)
    }
    if (!(await pause(REOPEN_DELAY_MS, signal))) return
  }
}
