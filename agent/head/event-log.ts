/**
 * The head node's durable event store: one append-only JSON-lines file per
 * node (`<store>/events/<node>.jsonl`), and an index of event ids rebuilt from
 * the files at start (SPEC §8: at-least-once delivery, exactly-once storage).
 *
 * A batch is made durable with core/durable.ts `appendDurable` (every byte
 * written, fdatasync) and only then reported accepted; the server answers
 * 2xx after that. Concurrent batches of many nodes share one such append
 * to a journal (group commit, group-commit.ts: one fdatasync per group),
 * then go to their node files, which a checkpoint syncs later. Batches for one node are serialised, so the duplicate check
 * and the append cannot interleave. A batch that fails part-way (a full file
 * system, EIO) is cut back to the end of the last acknowledged batch, which
 * the log keeps per node: bytes beyond it are cut before the next append, so
 * an acknowledged line is never glued onto a torn one. A line torn by a crash
 * (no final newline) was never acknowledged and is cut off at start; an event
 * found glued behind a torn prefix (a store written before that rule) is
 * recovered, not skipped.
 */
import { open, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { AgentEvent } from '../protocol/event.js'
import { parseEventJson } from '../protocol/parse.js'
import { BootAgentError, isErrno } from '../core/errors.js'
import { type Logger, silentLogger } from '../core/log.js'
import { isSafeName } from './names.js'
import { writeAll } from '../core/durable.js'
import { GroupJournal, type GroupCommitStats } from './group-commit.js'
import { makeDir } from '../core/make-dir.js'

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
  /** Per node: the length of its file after its last acknowledged batch. */
  private readonly ends = new Map<string, number>()
  private readonly queues = new Map<string, Promise<unknown>>()
  private closed = false
  /** Node files the journal replay wrote (synced by its checkpoint). */
  private readonly journalDirty = new Set<string>()

  private readonly journal: GroupJournal

  constructor(dir: string, opts: Pick<EventLogOptions, 'log'> = {}) {
    this.dir = dir
    this.log = opts.log ?? silentLogger()
    this.journal = new GroupJournal(dir, (node, text) => this.writeNodeFile(node, text), (node) => this.pathFor(node), EVENT_FILE_MODE)
  }

  /** Creates the directory and rebuilds the id index from the files. */
  async open(opts: Pick<EventLogOptions, 'onReplay'> = {}): Promise<{ nodes: number; events: number; tornBytes: number }> {
    await makeDir(this.dir, 0o750)
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
        await cutTo(path, end)
      }
      this.ends.set(node, end)
      const set = this.idSet(node)
      for (const line of buf.subarray(0, end).toString('utf8').split('\n')) {
        if (!line) continue
        const parsed = parseEventJson(line, { node })
        const event = parsed.ok ? parsed.event : recoverGlued(line, node)
        if (!event) {
          const why = parsed.ok ? {} : { field: parsed.field, problem: parsed.problem }
          this.log.warn({ node, ...why }, 'skipping an unreadable line in the event store')
          continue
        }
        if (!parsed.ok) this.log.warn({ node, id: event.id, bytes: line.length }, 'recovered an event glued behind a torn line')
        if (set.has(event.id)) continue
        set.add(event.id)
        events++
        opts.onReplay?.(event)
      }
    }
    events += await this.replayJournal(opts.onReplay)
    return { nodes: this.ids.size, events, tornBytes }
  }

  /**
   * The journal's events missing from their node's file (acknowledged, then a
   * crash before the node file had them) written there, then a checkpoint.
   * A torn last line was never acknowledged and is dropped. Returns how many.
   */
  private async replayJournal(onReplay?: (event: AgentEvent) => void): Promise<number> {
    const buf = await readFile(this.journal.path).catch((e: unknown) => (isErrno(e, 'ENOENT') ? Buffer.alloc(0) : Promise.reject(e)))
    let added = 0
    for (const line of buf.subarray(0, buf.lastIndexOf(0x0a) + 1).toString('utf8').split('\n')) {
      if (!line) continue
      let node: unknown
      try {
        node = (JSON.parse(line) as { node?: unknown }).node
      } catch {
        node = undefined
      }
      const parsed = typeof node === 'string' && isSafeName(node) ? parseEventJson(line, { node }) : undefined
      if (!parsed?.ok || typeof node !== 'string') {
        this.log.warn({}, 'skipping an unreadable line in the event journal')
        continue
      }
      const set = this.idSet(node)
      if (set.has(parsed.event.id)) continue
      await this.writeNodeFile(node, line + '\n')
      this.journalDirty.add(node)
      set.add(parsed.event.id)
      added++
      onReplay?.(parsed.event)
    }
    if (added) this.log.warn({ events: added }, 'acknowledged events found only in the journal were written to their node files')
    await this.journal.checkpoint(this.journalDirty)
    this.journalDirty.clear()
    return added
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

  /** Waits for every append in flight, then refuses new ones; the node files are synced and the journal emptied. */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.queues.values()])
    await this.journal.close()
  }

  /** Groups made durable and batches acknowledged through them (one fdatasync per group). */
  groupStats(): GroupCommitStats {
    return { ...this.journal.stats }
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
    // Durable (the group's journal fdatasync) before it resolves: no acknowledgement before that.
    await this.journal.commit(node, fresh)
    for (const e of fresh) set.add(e.id)
    return { accepted: fresh, duplicates }
  }

  /**
   * Writes a committed batch to its node's file, after any bytes past the last
   * good end are cut (a torn earlier write), without a sync of its own: the
   * journal holds it durably until a checkpoint syncs this file.
   */
  private async writeNodeFile(node: string, text: string): Promise<void> {
    const path = this.pathFor(node)
    const fh = await open(path, 'a+', EVENT_FILE_MODE)
    try {
      const size = (await fh.stat()).size
      const end = this.ends.get(node) ?? size
      if (size > end) {
        this.log.warn({ node, bytes: size - end }, 'cut bytes no acknowledged batch wrote from the end of the event file')
        await fh.truncate(end)
      }
      try {
        await writeAll(fh, text)
      } catch (e) {
        await fh.truncate(end).catch(() => undefined)
        throw e
      }
      this.ends.set(node, end + Buffer.byteLength(text))
    } finally {
      await fh.close()
    }
  }
}

/** Mode of a node's event file. */
const EVENT_FILE_MODE = 0o640

/** Most places a glued line is tried from (an event is at most 64 KiB, its torn prefix as much). */
const MAX_GLUE_TRIES = 4096

/**
 * The event at the end of `line` when `line` is a torn prefix (an append
 * that failed part-way, left by a head before appends were cut back) glued
 * to a whole event line: the first `{` from which the rest parses as an
 * event of `node`. Undefined when there is none.
 */
export const recoverGlued = (line: string, node: string): AgentEvent | undefined => {
  let tries = 0
  for (let at = line.indexOf('{', 1); at > 0 && tries < MAX_GLUE_TRIES; at = line.indexOf('{', at + 1), tries++) {
    const parsed = parseEventJson(line.slice(at), { node })
    if (parsed.ok) return parsed.event
  }
  return undefined
}

/** Cuts the file at `path` to `length` bytes, durably. */
const cutTo = async (path: string, length: number): Promise<void> => {
  const fh = await open(path, 'r+')
  try {
    await fh.truncate(length)
    await fh.datasync()
  } finally {
    await fh.close()
  }
}
