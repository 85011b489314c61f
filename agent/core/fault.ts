/**
 * Named kill points for the fault campaigns (test/faults/, docs/reliability.md):
 * a test sets `BOOT_AGENT_FAULT=<point>:<n>` and the process SIGKILLs itself
 * at the n-th pass of that point, exactly as `kill -9` from outside would
 * stop it there, but at a place and not a time, so that a loaded machine
 * cannot move the kill and a seed reproduces it. `BOOT_AGENT_FAULT_TRACE=<file>`
 * appends each pass's point name to the file instead: the campaign runs a
 * scenario once with it to count the passes it then picks from.
 *
 * Both variables are read once, when this module loads. Unset (always, in
 * production), {@link faultPoint} is one comparison and returns.
 */
import { appendFileSync } from 'node:fs'

/**
 * Every kill point, by room. The campaign fails when one of them is never
 * passed by its scenarios, so a point cannot silently fall out of the code.
 */
export const FAULT_POINTS = [
  // core/durable.ts: the one durable write and the one durable append (cache meta, spool, head store, event log).
  'durable.write.synced',
  'durable.write.renamed',
  'durable.append.torn',
  'durable.append.written',
  'durable.append.synced',
  // transport/: a download's chunk written, its progress recorded, the whole image verified.
  'download.chunk-written',
  'download.progress-recorded',
  'fetch.verified',
  // cache/store.ts publish: metadata written, object linked in.
  'cache.publish.meta',
  'cache.publish.linked',
  // transport/fetch-image.ts repair: a corrupt object demoted to a partial download.
  'repair.demoted',
  // head/publish.ts: the image stored, its manifest written (the name not moved yet).
  'head.publish.stored',
  'head.publish.manifest',
  // head/ingest.ts: a batch stored, not yet acknowledged.
  'head.ingest.stored',
  // boot/unpack.ts: unsquashfs done, each entry moved up, all moved.
  'unpack.unpacked',
  'unpack.moved',
  'unpack.done',
] as const

export type FaultPointName = (typeof FAULT_POINTS)[number]

const parseArmed = (spec: string | undefined): { point: string; n: number } | undefined => {
  if (!spec) return undefined
  const at = spec.lastIndexOf(':')
  const n = Number(spec.slice(at + 1))
  if (at <= 0 || !Number.isSafeInteger(n) || n < 1) return undefined
  return { point: spec.slice(0, at), n }
}

const armed = parseArmed(process.env.BOOT_AGENT_FAULT)
const trace = process.env.BOOT_AGENT_FAULT_TRACE || undefined
let passes = 0

/** True when a campaign is running (a point is armed or traced): lets a writer split a write so a torn one can be killed. */
export const faultsActive = armed !== undefined || trace !== undefined

/** A pass of kill point `name`: nothing unless a campaign armed or traces it (see the module comment). */
export const faultPoint = (name: FaultPointName): void => {
  if (!faultsActive) return
  if (trace) appendFileSync(trace, `${name}\n`)
  if (armed?.point === name && ++passes === armed.n) process.kill(process.pid, 'SIGKILL')
}
