/**
 * Group commit for the head's event store (issue 20): a thousand nodes
 * sending their boot events at once cost one fdatasync per group of
 * concurrent batches, not one per batch. Batches that arrive while a group is
 * being made durable wait together for the next one.
 *
 * A group's events go, as JSON lines, to one journal file
 * (`<events>/.journal`, named so no `*.jsonl` reader takes it for a node's) with core/durable.ts `appendDurable` (every byte
 * written, fdatasync, cut back whole on failure): only then are the batches
 * acknowledged. Each node's own file (`<node>.jsonl`, what the views and a
 * restart read) is appended to after, without a sync of its own; a
 * checkpoint (when the journal passes {@link CHECKPOINT_BYTES}, and at close)
 * syncs the node files written since and empties the journal. At open the
 * journal's events missing from their node's file are written there (a crash
 * between the journal's sync and the node files' is that case), so every
 * acknowledged event is in its node's file exactly once.
 */
import { open } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { appendDurable, fsyncPath } from '../core/durable.js'
import { isErrno } from '../core/errors.js'
import type { AgentEvent } from '../protocol/event.js'

/** The journal's name in the events directory: a leading dot, so it is never a node's file (`<node>.jsonl`, names start with a letter or digit). */
export const JOURNAL_FILE = '.journal'
/** The journal is emptied (node files synced first) once it holds this much. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024

interface Pending {
  node: string
  events: readonly AgentEvent[]
  resolve: () => void
  reject: (e: unknown) => void
}

/** Writes one batch to its node's file (no sync: the journal holds it durably). */
export type NodeAppend = (node: string, text: string) => Promise<void>

export interface GroupCommitStats {
  /** Groups made durable (fdatasyncs of the journal). */
  groups: number
  /** Batches acknowledged through them. */
  batches: number
}

export class GroupJournal {
  readonly path: string
  private queue: Pending[] = []
  private running: Promise<void> | undefined
  private journalEnd: number | undefined
  private readonly dirty = new Set<string>()
  /** A node file write failed after its journal sync: the journal must outlive this process (the next open repairs from it). */
  private keep = false
  readonly stats: GroupCommitStats = { groups: 0, batches: 0 }

  constructor(
    dir: string,
    private readonly nodeAppend: NodeAppend,
    private readonly nodePath: (node: string) => string,
    private readonly mode: number,
  ) {
    this.path = join(dir, JOURNAL_FILE)
  }

  /** Resolves once `events` (new, validated, of `node`) are durable in the journal and written to the node's file. */
  commit(node: string, events: readonly AgentEvent[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ node, events, resolve, reject })
      this.running ??= this.drain().finally(() => (this.running = undefined))
    })
  }

  /** Waits for the groups in flight, then checkpoints (node files synced, journal emptied). */
  async close(): Promise<void> {
    // Bounded: each pass takes every queued batch; commits stop arriving once the log is closed.
    while (this.running) await this.running
    // Nothing written since the last checkpoint: nothing to do (the directory may be gone by now).
    if (this.dirty.size || this.journalEnd) await this.checkpoint()
  }

  /** Syncs every node file written since the last checkpoint (and `also`), then empties the journal. */
  async checkpoint(also: Iterable<string> = []): Promise<void> {
    if (this.keep) return
    for (const node of also) this.dirty.add(node)
    // A file (or the whole store) removed behind the head's back has nothing left to make durable.
    const gone = (e: unknown): undefined => {
      if (isErrno(e, 'ENOENT')) return undefined
      throw e
    }
    for (const node of this.dirty) await fsyncPath(this.nodePath(node)).catch(gone)
    // New node files' names, too.
    if (this.dirty.size) await fsyncPath(dirname(this.path)).catch(gone)
    this.dirty.clear()
    const fh = await open(this.path, 'r+').catch(gone)
    if (fh) {
      try {
        await fh.truncate(0)
        await fh.datasync()
      } finally {
        await fh.close()
      }
    }
    this.journalEnd = 0
  }

  private async drain(): Promise<void> {
    // Bounded: each pass empties the queue; it ends when no batch arrived during the last group.
    while (this.queue.length) {
      const group = this.queue
      this.queue = []
      const text = group.map((p) => p.events.map((e) => JSON.stringify(e)).join('\n') + '\n').join('')
      try {
        const r = await appendDurable(this.path, text, { mode: this.mode, lines: true, ...(this.journalEnd !== undefined ? { end: this.journalEnd } : {}) })
        this.journalEnd = r.end
        this.stats.groups++
      } catch (e) {
        for (const p of group) p.reject(e)
        continue
      }
      // Durable now; the node files follow, all at once (one batch per node per group: the
      // event log serialises a node's batches), before the batches are acknowledged. A failure
      // there is repaired from the journal at the next open.
      await Promise.all(
        group.map(async (p) => {
          try {
            await this.nodeAppend(p.node, p.events.map((e) => JSON.stringify(e)).join('\n') + '\n')
            this.dirty.add(p.node)
          } catch {
            // Kept in the journal: no checkpoint may empty it before an open has replayed it.
            this.keep = true
          }
          this.stats.batches++
          p.resolve()
        }),
      )
      // A failed checkpoint leaves the journal as it was: it is retried at the next threshold or close.
      if ((this.journalEnd ?? 0) >= CHECKPOINT_BYTES) await this.checkpoint().catch(() => undefined)
    }
  }
}
