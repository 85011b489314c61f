/**
 * When the node drains or resumes itself in Slurm, decided from plain data
 * (after LBNL NHC, which drains from the node with `scontrol update
 * State=DRAIN Reason="NHC: …"` and only ever resumes nodes whose reason it
 * set itself). Nothing here runs a command: agent/daemon/slurm.ts carries the
 * decisions out.
 *
 * The one rule that must never break: a reason that does not start with
 * {@link REASON_PREFIX} belongs to an operator (or another health check) and
 * is neither overwritten by our drain nor cleared by our resume.
 */
import { hostname } from 'node:os'
import { ConfigError } from '../core/errors.js'
import type { EventKind } from '../protocol/event.js'

/** `off`: never touch Slurm; `drain`: drain on trouble; `drain+resume`: also resume our own drain after a verified boot. */
export type SlurmMode = 'off' | 'drain' | 'drain+resume'
export const SLURM_MODES: readonly SlurmMode[] = ['off', 'drain', 'drain+resume']

/** Event kinds that mean this node's image or disk cannot be trusted with jobs. */
export const DRAIN_KINDS: readonly EventKind[] = ['squashfs-error', 'io-error', 'integrity']

/** Every reason we set starts with this; anything else is someone else's. */
export const REASON_PREFIX = 'boot-agent:'

/** Parses `--slurm`; an unknown value names the accepted ones. */
export const parseSlurmMode = (v: string): SlurmMode => {
  if ((SLURM_MODES as readonly string[]).includes(v)) return v as SlurmMode
  throw new ConfigError('--slurm', `${JSON.stringify(v)} is not one of ${SLURM_MODES.join(', ')}`)
}

/** Characters Slurm accepts in a node name (and nothing a shell or scontrol's parser would split on). */
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

/**
 * The Slurm node name from a pattern: `{short}` (hostname up to the first
 * dot, the default), `{hostname}` (the full one) and `{node}` (boot-agent's
 * node id) are replaced; anything else is kept literally, e.g. `cn-{node}`.
 */
export const slurmNodeName = (pattern: string, ids: { node: string; hostname?: string }): string => {
  const host = ids.hostname ?? hostname()
  const name = pattern.replaceAll('{short}', host.split('.')[0] ?? host).replaceAll('{hostname}', host).replaceAll('{node}', ids.node)
  if (!NODE_NAME.test(name)) throw new ConfigError('--slurm-node', `pattern ${JSON.stringify(pattern)} gives ${JSON.stringify(name)}, not a Slurm node name (letters, digits, . _ -)`)
  return name
}

/** `boot-agent: squashfs-error sha256:0123456789ab` — the kind and the first 12 hex digits of the image digest. */
export const drainReason = (kind: string, sha256: string | undefined): string =>
  `${REASON_PREFIX} ${kind} ${sha256 ? `sha256:${sha256.slice(0, 12)}` : 'image unknown'}`

/** Whether `reason` is one we set. */
export const isOurReason = (reason: string | undefined): boolean => reason?.startsWith(REASON_PREFIX) === true

/** What Slurm says of the node: its state flags and its reason, if any. */
export interface SlurmNodeInfo {
  /** `IDLE+DRAIN` → ['IDLE', 'DRAIN']. */
  state: string[]
  reason?: string
}

/**
 * Parses one line of `scontrol show node -o NAME`. The reason runs to the end
 * of the line (it may hold spaces), followed by ` [user@time]`, which is
 * dropped. Returns undefined when the line has no `State=`.
 */
export const parseNodeLine = (line: string): SlurmNodeInfo | undefined => {
  const state = /(?:^|\s)State=(\S+)/.exec(line)?.[1]
  if (!state) return undefined
  const reason = /(?:^|\s)Reason=(.*?)(?: \[[^\]@]*@[^\]]*\])?\s*$/.exec(line)?.[1]
  return { state: state.split('+'), ...(reason && reason !== '(null)' ? { reason } : {}) }
}

/** The node is drained or draining (`DRAIN` is the flag; sinfo shows it as drained/draining). */
export const isDrained = (info: SlurmNodeInfo): boolean => info.state.includes('DRAIN') || info.state.includes('DRAINED') || info.state.includes('DRAINING')

export type SlurmDecision =
  | { action: 'drain'; reason: string }
  | { action: 'resume'; reason: string }
  | { action: 'none'; why: string }

/**
 * On an event: drain when the kind is one of {@link DRAIN_KINDS}, unless we
 * already drained in this boot, or the node is drained already — by us
 * (nothing to add) or by someone else (their reason stays; overwriting it
 * would lose what the operator wrote). `info` undefined: Slurm could not be
 * asked; draining is still right (a drain is what an unknown state needs).
 */
export const decideOnEvent = (mode: SlurmMode, kind: string, sha256: string | undefined, drainedThisBoot: boolean, info: SlurmNodeInfo | undefined): SlurmDecision => {
  if (mode === 'off') return { action: 'none', why: 'slurm integration is off' }
  if (!(DRAIN_KINDS as readonly string[]).includes(kind)) return { action: 'none', why: `${kind} does not drain` }
  if (drainedThisBoot) return { action: 'none', why: 'already drained in this boot' }
  if (info && isDrained(info)) {
    return { action: 'none', why: isOurReason(info.reason) ? `already drained by us: ${info.reason ?? ''}` : `already drained by someone else (reason kept): ${info.reason ?? '(none)'}` }
  }
  return { action: 'drain', reason: drainReason(kind, sha256) }
}

/** What the daemon knows at start, once the kernel log is caught up. */
export interface ResumeFacts {
  mode: SlurmMode
  /** This boot verified its image (boot record: result ok, an image digest). */
  verifiedBoot: boolean
  /** The boot id of the boot in which we last drained, when we recorded one. */
  drainedInBoot?: string
  bootId: string
  /** A drain kind was already seen in this boot (before the log was caught up). */
  troubleThisBoot: boolean
  info: SlurmNodeInfo | undefined
}

/**
 * Resume only our own drain, only in `drain+resume`, only after a verified
 * boot that is not the boot we drained in, and only when this boot has had
 * no trouble of its own.
 */
export const decideAtStart = (f: ResumeFacts): SlurmDecision => {
  if (f.mode !== 'drain+resume') return { action: 'none', why: `mode ${f.mode} never resumes` }
  if (!f.info) return { action: 'none', why: 'node state unknown' }
  if (!isDrained(f.info)) return { action: 'none', why: 'node is not drained' }
  if (!isOurReason(f.info.reason)) return { action: 'none', why: `drained by someone else (reason kept): ${f.info.reason ?? '(none)'}` }
  if (f.drainedInBoot === f.bootId) return { action: 'none', why: 'we drained it in this very boot' }
  if (f.troubleThisBoot) return { action: 'none', why: 'this boot has had trouble of its own' }
  if (!f.verifiedBoot) return { action: 'none', why: 'this boot did not boot a verified image' }
  return { action: 'resume', reason: f.info.reason ?? '' }
}
