/**
 * Hand-off from the boot stage to the daemon and the head node (SPEC §7, §8).
 *
 * - The boot record `${runDir}/boot-record.json` (/run survives switch_root):
 *   what was booted, how, which fallbacks and why, hit or miss, timings.
 * - Events spooled durably for upstream delivery: `boot` (carrying the
 *   record), one `fallback` per fallback, `integrity` when a cached object had
 *   to be repaired, `boot-failed` with the error. The daemon drains the spool.
 * - `rd.bootagent.onfail` after a failed boot, as an exit code for the dracut
 *   hook (see {@link EXIT_CODES}) and, for `reboot`, the reboot itself.
 */
import { join } from 'node:path'
import { BootAgentError, messageOf } from '../core/errors.js'
import { makeEvent, type AgentEvent } from '../protocol/event.js'
import { type PostFetch, Sender } from '../events/sender.js'
import { Spool } from '../events/spool.js'
import { sleep as realSleep } from '../core/clock.js'
import { writeFileDurable } from '../core/durable.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import type { Logger } from '../core/log.js'
import { commands } from '../core/system.js'
import type { BootStyle, OnFail } from './cmdline.js'
import type { Fallback } from './plan.js'
import { seededRandom } from '../transport/mirrors.js'
import { makeDir } from '../core/make-dir.js'

export const BOOT_RECORD_FILE = 'boot-record.json'

/**
 * Exit codes of `boot-agent boot`, which the dracut hook acts on:
 * - 0: the new root is mounted at the sysroot; continue the boot.
 * - 1: failed boot, `onfail=emergency`: the hook calls dracut's `die` (emergency shell, boot stops).
 * - 2: usage or configuration error (a bad `rd.bootagent.*` value): handled like 1.
 * - 3: failed boot, `onfail=shell`: the hook opens `emergency_shell` and retries the stage when it exits.
 * - 4: reboot: `onfail=reboot` or the cache was cleared (cachefull=clear-reboot); the agent has already
 *      run the reboot command after the delay; if it returned, the hook runs `reboot -f`.
 */
export const EXIT_CODES = { ok: 0, emergency: 1, usage: 2, shell: 3, reboot: 4 } as const

export interface BootRecord {
  schema: 1
  node: string
  server: string
  style: BootStyle | null
  requestedStyle: BootStyle | null
  fallbacks: Fallback[]
  image: { name: string; sha256: string; size: number } | null
  /** `verifiedBy`: what the image's bytes were checked against (FetchedImage.verifiedBy). */
  /**
   * `verification`: which check ran, in words (`measured fs-verity`, `fast verify`, …);
   * `bytesReadVerifying`: bytes the kernel read from the cache device from the cache's
   * opening to the image's being verified (and fetched); `sealed`: what sealing the object
   * with fs-verity did this boot; `readBecause`: why a sealed object was read, not measured;
   * `chunksRepaired`: chunks of a damaged cached object fetched again.
   */
  cache: {
    spec: string | null; device?: string; mountpoint?: string; hit: boolean; verifiedBy?: string; objectPath?: string; inRam: boolean
    verification?: string; bytesReadVerifying?: number; sealed?: string; readBecause?: string; chunksRepaired?: number
  }
  /**
   * `mode`: how a disked root was made (overlay or unpack). An overlay root
   * also names the root partition's `mountpoint` (it stays mounted), the
   * loop-mounted image (`lower`), this boot's `upper`, the `trash` the daemon
   * empties, and how many old layers this boot `trashed`.
   */
  root: { spec: string | null; device?: string; sysroot?: string; init?: string; mode?: 'overlay' | 'unpack'; mountpoint?: string; lower?: string; upper?: string; trash?: string; trashed?: number }
  bytesFetched: number
  /** Bytes taken from older cached versions instead of downloaded (delta reuse). */
  bytesReused?: number
  timings: Record<string, number>
  result: 'ok' | 'failed'
  /** What the stage asked for after a failure (or after clearing a full cache). */
  action?: 'reboot' | 'emergency' | 'shell'
  error?: { code: string; message: string }
  spoolDir: string
  /** ISO time the record was written. */
  time: string
}

/** Writes the record durably (temp, fsync, rename). */
export const writeBootRecord = async (runDir: string, record: BootRecord): Promise<string> => {
  await makeDir(runDir, 0o755)
  await writeFileDurable(join(runDir, BOOT_RECORD_FILE), JSON.stringify(record, null, 2) + '\n')
  return `${runDir}/${BOOT_RECORD_FILE}`
}

/** The events a boot record turns into, in the order they happened. */
export const bootEvents = (record: BootRecord, extra: AgentEvent[] = [], now = new Date()): AgentEvent[] => {
  const image = record.image ? { name: record.image.name, sha256: record.image.sha256 } : undefined
  const opts = { now, ...(image ? { image } : {}) }
  const events: AgentEvent[] = [...extra]
  for (const f of record.fallbacks) {
    events.push(makeEvent('fallback', record.node, { kind: f.kind, reason: f.reason, requestedStyle: record.requestedStyle, style: record.style }, opts))
  }
  if (record.result === 'ok') events.push(makeEvent('boot', record.node, { record }, opts))
  else events.push(makeEvent('boot-failed', record.node, { error: record.error, action: record.action, record }, opts))
  return events
}

/** Spools the events; a spool that cannot be written is logged, never fatal to the boot. */
export const spoolEvents = async (spoolDir: string, events: AgentEvent[], log?: Logger): Promise<boolean> => {
  try {
    await new Spool(spoolDir).append(...events)
    return true
  } catch (e) {
    log?.error({ spoolDir, err: messageOf(e), kinds: events.map((x) => x.kind) }, 'cannot spool boot events')
    return false
  }
}

/** How long the boot stage waits for the head node to take its events before leaving them to the daemon. */
export const BOOT_DELIVERY_DEADLINE_MS = 3_000

/**
 * Best effort, bounded: sends what the boot stage spooled to the head node now,
 * so a node that fails to boot (and may never run the daemon) is still heard.
 * Events stay spooled until the head acknowledges them; anything not sent here
 * is delivered by the daemon after boot (event ids make a resend harmless).
 */
export const deliverBootEvents = async (
  spoolDir: string,
  server: string,
  node: string,
  opts: { log?: Logger; deadlineMs?: number; fetch?: PostFetch; token?: string } = {},
): Promise<number> => {
  if (!server || !node) return 0
  const deadlineMs = opts.deadlineMs ?? BOOT_DELIVERY_DEADLINE_MS
  try {
    const sender = new Sender({
      server,
      node,
      spools: [new Spool(spoolDir)],
      requestTimeoutMs: deadlineMs,
      // Jitter seeded by the node id: nodes booted from one initramfs retry at different times.
      random: seededRandom(`${node}:events`),
      ...(opts.log ? { log: opts.log } : {}),
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.token ? { token: opts.token } : {}),
    })
    const r = await sender.flushOnce(AbortSignal.timeout(deadlineMs))
    opts.log?.info({ sent: r.sent, duplicates: r.duplicates }, 'boot events delivered to the head node')
    return r.sent
  } catch (e) {
    opts.log?.warn({ err: messageOf(e), spoolDir }, 'boot events stay spooled; the daemon delivers them after boot')
    return 0
  }
}

export interface OnFailDeps {
  run?: Runner
  sleep?: (ms: number) => Promise<void>
  log?: Logger
  rebootDelayMs: number
  /**
   * Run the reboot command (default true). `boot-agent boot` outside an
   * initramfs passes false: it exits 4 and leaves the machine running.
   */
  mayReboot?: boolean
}

/**
 * Carries out `onfail` after the reasons are spooled: returns the exit code
 * for the dracut hook; for `reboot` first waits the delay (so an operator on
 * the console can read why) and runs the reboot command.
 */
export const actOnFailure = async (onfail: OnFail, deps: OnFailDeps): Promise<number> => {
  if (onfail === 'emergency') return EXIT_CODES.emergency
  if (onfail === 'shell') return EXIT_CODES.shell
  if (deps.mayReboot === false) {
    deps.log?.warn('boot failed: onfail=reboot, but not in an initramfs: exiting 4 without rebooting')
    return EXIT_CODES.reboot
  }
  const sleep = deps.sleep ?? realSleep
  deps.log?.warn({ delayMs: deps.rebootDelayMs }, 'boot failed: rebooting (rd.bootagent.onfail=reboot)')
  await sleep(deps.rebootDelayMs)
  const run = deps.run ?? defaultRun
  const r = await run(commands.reboot, [], { allowFailure: true, timeoutMs: 60_000 }).catch((e: unknown) => {
    deps.log?.error({ err: messageOf(e) }, 'reboot command failed')
    return undefined
  })
  if (r && r.exitCode !== 0) deps.log?.error({ exitCode: r.exitCode, stderr: r.stderr }, 'reboot command failed')
  return EXIT_CODES.reboot
}

/** The stable code and message of anything thrown. */
export const errorSummary = (e: unknown): { code: string; message: string } => ({
  code: e instanceof BootAgentError ? e.code : 'EUNEXPECTED',
  message: messageOf(e),
})
