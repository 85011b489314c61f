/**
 * The head node's durable event store: one append-only JSON-lines file per
 * node (`<store>/events/<node>.jsonl`), and an index of event ids rebuilt from
 * the files at start (SPEC §8: at-least-once delivery, exactly-once storage).
 *
 * A batch is written with one write, then fdatasync, and only then reported
 * accepted; the server answers 2xx after that. Batches for one node are
 * serialised, so the duplicate check and the append cannot interleave. A
 * write that fails part-way is cut back to the previous end of the file. A
 * line torn by a crash (no final newline) was never acknowledged and is cut
 * off at start.
 */
import { mkdir, open, readdir, readFile, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import type { AgentEvent } from '../protocol/event.js'
import { parseEventJson } from '../protocol/parse.js'
import { BootAgentError, isErrno } from '../core/errors.js'
import { type Logger, silentLogger } from '../core/log.js'
import { isSafeName } from './names.js'
import { fsyncPath as fsyncDir } from '../core/durable.js'

export interface AppendResult {
  /** Events newly stored, in order. */
  accepted: AgentEvent[]
  /** Events already stored before (by id). */
  duplicates: number
}

export interface EventLogOptions {
  log?: Logger
  /** Called for every stored event found at open, oldest first per node. */
  onReplay?: (event: AgentEvent) => void
}

export class EventLog {
  readonly dir: string
  private readonly log: Logger
  private readonly ids = new Map<string, Set<string>>()
  private readonly queues = new Map<string, Promise<unknown>>()
  private closed = false

  constructor(dir: string, opts: Pick<EventLogOptions, 'log'> = {}) {
    this.dir = dir
    this.log = opts.log ?? silentLogger()
  }

  /** Creates the directory and rebuilds the id index from the files. */
  async open(opts: Pick<EventLogOptions, 'onReplay'> = {}): Promise<{ nodes: number; events: number; tornBytes: number }> {
    await mkdir(this.dir, { recursive: true, mode: 0o750 })
    let events = 0
    let tornBytes = 0
    const files = (await readdir(this.dir)).filter((f) => f.endsWith('.jsonl')).sort()
    for (const file of files) {
      const node = file.slice(0, -'.jsonl'.length)
      if (!isSafeName(node)) {
        this.log.warn({ file }, 'ignoring a file in the event store that is not named after a node')
        continue
      }
      const path = join(this.dir, file)
      const buf = await readFile(path)
      const end = buf.lastIndexOf(0x0a) + 1
      if (end < buf.length) {
        tornBytes += buf.length - end
        this.log.warn({ node, bytes: buf.length - end }, 'cutting a torn last event line (written but never acknowledged)')
        await truncate(path, end)
      }
      const set = this.idSet(node)
      for (const line of buf.subarray(0, end).toString('utf8').split('\n')) {
        if (!line) continue
        const parsed = parseEventJson(line, { node })
        if (!parsed.ok) {
          this.log.warn({ node, field: parsed.field, problem: parsed.problem }, 'skipping an unreadable line in the event store')
          continue
        }
        const event = parsed.event
        if (set.has(event.id)) continue
        set.add(event.id)
        events++
        opts.onReplay?.(event)
      }
    }
    return { nodes: this.ids.size, events, tornBytes }
  }

  /** Whether an event id is stored for `node`. */
  has(node: string, id: string): boolean {
    return this.ids.get(node)?.has(id) ?? false
  }

  /** Number of events stored for `node` (all nodes when omitted). */
  count(node?: string): number {
    if (node !== undefined) return this.ids.get(node)?.size ?? 0
    let n = 0
    for (const s of this.ids.values()) n += s.size
    return n
  }

  pathFor(node: string): string {
    return join(this.dir, `${node}.jsonl`)
  }

  /**
   * Stores the events not stored before, durably, and resolves only once
   * they are on disk. Events must already be validated and belong to `node`.
   */
  append(node: string, events: readonly AgentEvent[]): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new BootAgentError('ESTORE', 'event log is closed'))
    const prev = this.queues.get(node) ?? Promise.resolve()
    const next = prev.then(() => this.appendNow(node, events))
    const settled = next.catch(() => undefined)
    this.queues.set(node, settled)
    void settled.then(() => {
      if (this.queues.get(node) === settled) this.queues.delete(node)
    })
    return next
  }

  /** Waits for every append in flight, then refuses new ones. */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.queues.values()])
  }

  private idSet(node: string): Set<string> {
    let set = this.ids.get(node)
    if (!set) {
      set = new Set()
      this.ids.set(node, set)
    }
    return set
  }

  private async appendNow(node: string, events: readonly AgentEvent[]): Promise<AppendResult> {
    const set = this.idSet(node)
    const fresh: AgentEvent[] = []
    const batchIds = new Set<string>()
    for (const e of events) {
      if (set.has(e.id) || batchIds.has(e.id)) continue
      batchIds.add(e.id)
      fresh.push(e)
    }
    const duplicates = events.length - fresh.length
    if (fresh.length === 0) return { accepted: [], duplicates }
    const path = this.pathFor(node)
    const isNew = !(await exists(path))
    const fh = await open(path, 'a', 0o640)
    let start = -1
    try {
      start = (await fh.stat()).size
      const text = fresh.map((e) => JSON.stringify(e)).join('\n') + '\n'
      await fh.write(text)
      await fh.datasync()
    } catch (e) {
      // Nothing stored half: cut back to where this batch began.
      if (start >= 0) await fh.truncate(start).catch(() => undefined)
      throw e
    } finally {
      await fh.close()
    }
    if (isNew) await fsyncDir(this.dir)
    for (const e of fresh) set.add(e.id)
    return { accepted: fresh, duplicates }
  }
}

const exists = async (path: string): Promise<boolean> => {
  try {
    await (await open(path, 'r')).close()
    return true
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return false
    throw e
  }
}
