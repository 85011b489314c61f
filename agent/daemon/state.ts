/**
 * The daemon's small state files in its state dir (root-only, written
 * durably): where it is in the kernel log, and its last heartbeat. `boot-agent
 * status` reads the same files, without the network.
 */
import { readFile, rm, open } from 'node:fs/promises'
import { parseSpooledEvent } from '../events/spool.js'
import type { AgentEvent } from '../protocol/event.js'
import { join } from 'node:path'
import { writeFileDurable } from '../core/durable.js'
import { makeDir } from '../core/make-dir.js'

export const POSITION_FILE = 'kmsg-position.json'
/** A flush being committed: its events and the position it moves to (a redo record, see daemon.ts). */
export const FLUSH_FILE = 'kmsg-flush.json'
export const HEARTBEAT_FILE = 'heartbeat.json'
export const SPOOL_SUBDIR = 'spool'

export interface KmsgPosition {
  /** /proc/sys/kernel/random/boot_id of the boot this position belongs to (seq restarts each boot). */
  bootId: string
  /** Every kernel error with seq ≤ this is spooled (or delivered). */
  seq: number
  /** Kernel records lost (ring overruns) this boot, as counted so far. */
  lost: number
  /** When this was written (ISO-8601). */
  time: string
}

export interface HeartbeatState {
  time: string
  eventId: string
  /** The status event's data, for `boot-agent status`. */
  data: Record<string, unknown>
}

const readJson = async (path: string): Promise<Record<string, unknown> | undefined> => {
  try {
    const v: unknown = JSON.parse(await readFile(path, 'utf8'))
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

export const readPosition = async (stateDir: string): Promise<KmsgPosition | undefined> => {
  const o = await readJson(join(stateDir, POSITION_FILE))
  if (!o || typeof o.bootId !== 'string' || !Number.isSafeInteger(o.seq)) return undefined
  return {
    bootId: o.bootId,
    seq: o.seq as number,
    lost: Number.isSafeInteger(o.lost) ? (o.lost as number) : 0,
    time: typeof o.time === 'string' ? o.time : '',
  }
}

export const writePosition = async (stateDir: string, p: KmsgPosition): Promise<void> => {
  await makeDir(stateDir, 0o700)
  await writeFileDurable(join(stateDir, POSITION_FILE), JSON.stringify(p))
}

export const readHeartbeat = async (stateDir: string): Promise<HeartbeatState | undefined> => {
  const o = await readJson(join(stateDir, HEARTBEAT_FILE))
  if (!o || typeof o.time !== 'string' || typeof o.eventId !== 'string') return undefined
  const data = typeof o.data === 'object' && o.data !== null ? (o.data as Record<string, unknown>) : {}
  return { time: o.time, eventId: o.eventId, data }
}

export const writeHeartbeat = async (stateDir: string, h: HeartbeatState): Promise<void> => {
  await makeDir(stateDir, 0o700)
  await writeFileDurable(join(stateDir, HEARTBEAT_FILE), JSON.stringify(h))
}

export interface FlushIntent {
  bootId: string
  /** The position the flush moves to. */
  seq: number
  lost: number
  events: AgentEvent[]
}

/** Writes the redo record of a flush, durably: from here on the flush happens, even across a crash. */
export const writeFlushIntent = async (stateDir: string, f: FlushIntent): Promise<void> => {
  await makeDir(stateDir, 0o700)
  await writeFileDurable(join(stateDir, FLUSH_FILE), JSON.stringify(f))
}

/** The redo record left by a flush a crash interrupted, if any (a malformed one is ignored). */
export const readFlushIntent = async (stateDir: string): Promise<FlushIntent | undefined> => {
  const o = await readJson(join(stateDir, FLUSH_FILE))
  if (!o || typeof o.bootId !== 'string' || !Number.isSafeInteger(o.seq) || !Array.isArray(o.events)) return undefined
  const events = o.events.map((e) => parseSpooledEvent(JSON.stringify(e)))
  if (events.some((e) => e === undefined)) return undefined
  return { bootId: o.bootId, seq: o.seq as number, lost: Number.isSafeInteger(o.lost) ? (o.lost as number) : 0, events: events as AgentEvent[] }
}

export const clearFlushIntent = async (stateDir: string): Promise<void> => {
  await rm(join(stateDir, FLUSH_FILE), { force: true })
  const fh = await open(stateDir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}
