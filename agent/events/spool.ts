/**
 * A durable, bounded spool of events waiting to go upstream (SPEC §8).
 *
 * One file per event, written temp → fsync → rename → fsync(dir), so an event
 * is either fully spooled or absent after a crash at any instant. File names
 * sort by spool time, so delivery keeps order. When the spool holds more than
 * `maxEvents`, the oldest are dropped and the drop is counted in `lost.json`;
 * the sender turns that count into a `lost` event, so nothing goes silently.
 *
 * The spool lives on the cache partition in the initramfs and moves to
 * /var/lib/boot-agent (or stays on the cache) after boot; the daemon drains it.
 */
import { randomUUID } from 'node:crypto'
import { readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { AgentEvent } from '../protocol/event.js'
import { parseEventJson } from '../protocol/parse.js'
import { isErrno } from '../core/errors.js'
import { fsyncPath, writeFileDurable } from '../core/durable.js'
import { makeDir } from '../core/make-dir.js'

export const DEFAULT_SPOOL_MAX_EVENTS = 10_000
const EVENT_FILE = /^(\d{16})-(\d{6})-([0-9a-f-]{36})\.json$/
const LOST_FILE = 'lost.json'

export interface SpoolOptions {
  /** Most events kept; beyond it the oldest are dropped and counted. */
  maxEvents?: number
}

export interface LostState {
  count: number
  total: number
  epoch: string
}

export interface SpooledEvent {
  file: string
  event: AgentEvent
}

let seq = 0

/**
 * Parses a spooled file with the protocol's parser (what the head would
 * refuse is not worth keeping); anything not an event is `undefined` (and
 * reported by the caller).
 */
export const parseSpooledEvent = (text: string): AgentEvent | undefined => {
  const r = parseEventJson(text)
  return r.ok ? r.event : undefined
}

export class Spool {
  readonly dir: string
  readonly maxEvents: number

  constructor(dir: string, opts: SpoolOptions = {}) {
    this.dir = dir
    this.maxEvents = opts.maxEvents ?? DEFAULT_SPOOL_MAX_EVENTS
  }

  async init(): Promise<void> {
    await makeDir(this.dir, 0o700)
  }

  /** Spools events durably; returns once they are on disk. Enforces the bound. */
  async append(...events: AgentEvent[]): Promise<void> {
    await this.init()
    for (const event of events) {
      const stamp = String(Date.now() * 1000).padStart(16, '0')
      const n = String(seq++ % 1_000_000).padStart(6, '0')
      await writeFileDurable(join(this.dir, `${stamp}-${n}-${event.id}.json`), JSON.stringify(event))
    }
    await this.enforceBound()
  }

  /** Spooled event file names, oldest first. */
  async files(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((f) => EVENT_FILE.test(f)).sort()
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return []
      throw e
    }
  }

  /**
   * Up to `limit` events, oldest first. Unreadable or malformed files are
   * removed and counted as lost (they can never be delivered).
   */
  async peek(limit: number): Promise<SpooledEvent[]> {
    const out: SpooledEvent[] = []
    for (const file of (await this.files()).slice(0, limit)) {
      const text = await readFile(join(this.dir, file), 'utf8').catch(() => '')
      const event = parseSpooledEvent(text)
      if (!event) {
        await this.remove([file])
        await this.addLost(1)
        continue
      }
      out.push({ file, event })
    }
    return out
  }

  /** The events in `files` that parse, without touching the spool (for a read-only look). */
  async peekFiles(files: readonly string[]): Promise<SpooledEvent[]> {
    const out: SpooledEvent[] = []
    for (const file of files) {
      const event = parseSpooledEvent(await readFile(join(this.dir, file), 'utf8').catch(() => ''))
      if (event) out.push({ file, event })
    }
    return out
  }

  /** Removes delivered events. */
  async remove(files: readonly string[]): Promise<void> {
    for (const f of files) await rm(join(this.dir, f), { force: true })
    if (files.length) await fsyncPath(this.dir)
  }

  /** Events dropped so far and not yet reported. */
  async lostCount(): Promise<number> {
    return (await this.lostState()).count
  }

  /**
   * The lost counter: `count` not yet reported, `total` ever dropped from this
   * spool, and `epoch`, a random id of this spool's counter. (epoch, total −
   * count) names the first unreported loss, which gives the `lost` event a
   * stable id: a resend after a crash is a duplicate the server drops.
   */
  async lostState(): Promise<LostState> {
    try {
      const v: unknown = JSON.parse(await readFile(join(this.dir, LOST_FILE), 'utf8'))
      const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {}
      const count = typeof o.count === 'number' && Number.isSafeInteger(o.count) && o.count >= 0 ? o.count : 0
      const total = typeof o.total === 'number' && Number.isSafeInteger(o.total) && o.total >= count ? o.total : count
      const epoch = typeof o.epoch === 'string' && /^[0-9a-f-]{36}$/.test(o.epoch) ? o.epoch : undefined
      return { count, total, epoch: epoch ?? randomUUID() }
    } catch {
      return { count: 0, total: 0, epoch: randomUUID() }
    }
  }

  async addLost(n: number): Promise<void> {
    if (n <= 0) return
    await this.init()
    const s = await this.lostState()
    await writeFileDurable(join(this.dir, LOST_FILE), JSON.stringify({ count: s.count + n, total: s.total + n, epoch: s.epoch }))
  }

  /** Clears the lost count after a `lost` event carrying it has been spooled or sent. */
  async resetLost(by: number): Promise<void> {
    const s = await this.lostState()
    await this.init()
    await writeFileDurable(join(this.dir, LOST_FILE), JSON.stringify({ count: Math.max(0, s.count - by), total: s.total, epoch: s.epoch }))
  }

  private async enforceBound(): Promise<void> {
    const files = await this.files()
    const excess = files.length - this.maxEvents
    if (excess <= 0) return
    await this.remove(files.slice(0, excess))
    await this.addLost(excess)
  }
}
