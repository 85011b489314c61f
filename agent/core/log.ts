/**
 * Logs (pino) to standard error: `<N>`-prefixed prose for the journal, readable
 * lines on a terminal, JSON lines otherwise (agent/core/log-format.ts says how
 * each reads; chooseLogFormat which applies). Logging is synchronous: in the
 * initramfs switch_root kills every process, and a buffered line would be lost
 * with it (SPEC §11).
 *
 * pino is loaded at a logger's first use, not at start: it is most of what a
 * command's modules weigh (150 of the 236 KB `verify` loads, 15–30 ms of
 * parsing here), and `verify`, `cache ls` or a boot's hit path may not log at
 * all. The load is a synchronous require() so that every log call stays
 * synchronous; the bundle carries pino as one CommonJS file beside its chunks
 * (scripts/bundle-lib.mjs).
 *
 * Operations are logged as `[started]` / `[finished]` / `[failed]` with their
 * duration (after ignition's LogOp), not as chatter.
 */
import { fstatSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import { isatty } from 'node:tty'
import { fileURLToPath } from 'node:url'
import type { Bindings, ChildLoggerOptions, Logger } from 'pino'
import { BootAgentError, ConfigError, messageOf } from './errors.js'
import { formatRecord, LOG_FORMATS, type LogFormat } from './log-format.js'

export type { Logger }

type Pino = typeof import('pino').pino

/** Set by the bundle (scripts/bundle-lib.mjs): pino's CommonJS file, relative to the chunk holding this code. */
declare const __BOOT_AGENT_PINO__: string | undefined

let loaded: Pino | undefined
const loadPino = (): Pino => {
  if (!loaded) {
    const spec = typeof __BOOT_AGENT_PINO__ === 'string' ? __BOOT_AGENT_PINO__ : 'pino'
    try {
      loaded = createRequire(import.meta.url)(spec) as Pino
    } catch (e) {
      if (!spec.startsWith('.') || (e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e
      const path = fileURLToPath(new URL(spec, import.meta.url))
      throw new BootAgentError('EINSTALL', `the agent's bundle lacks ${path}, which its logging loads (install the whole bundle directory: the entry and every file in chunks/)`, { path }, { cause: e })
    }
  }
  return loaded
}

/**
 * A logger that makes its pino logger with `make` at the first use of any of
 * its properties. `child()` before then gives another lazy logger, made from
 * this one's when first used (pino copies a parent's level at child() time,
 * and the level cannot have changed without making the parent).
 */
const lazyLogger = (make: () => Logger): Logger => {
  let real: Logger | undefined
  const get = (): Logger => (real ??= make())
  return new Proxy({} as Logger, {
    get: (_t, key) => {
      if (key === 'child' && !real) return (bindings: Bindings, options?: ChildLoggerOptions<never>) => lazyLogger(() => get().child(bindings, options))
      const r = get()
      const v: unknown = Reflect.get(r, key, r)
      // Not cached: pino replaces a level's method when the level changes.
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(r) : v
    },
    set: (_t, key, value) => Reflect.set(get(), key, value),
    has: (_t, key) => Reflect.has(get(), key),
  })
}

/** pino's level names: a logger of another level would fail at its first line, far from the cause. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export interface LoggerOptions {
  /** pino level; `BOOT_AGENT_LOG_LEVEL` overrides. Default `info`. */
  level?: string
  /** File descriptor to write to. Default 2 (stderr). */
  fd?: number
  /** How lines read; `BOOT_AGENT_LOG_FORMAT` overrides. Default: chooseLogFormat(fd). */
  format?: string
}

/** Whether `fd` is the journal stream systemd connected (JOURNAL_STREAM is "device:inode", systemd.exec(5)). */
const isJournalStream = (fd: number, journalStream: string | undefined): boolean => {
  if (!journalStream) return false
  try {
    const st = fstatSync(fd, { bigint: true })
    return journalStream === `${st.dev}:${st.ino}`
  } catch {
    return false
  }
}

/**
 * The format for lines written to `fd`: `journal` when `fd` is the journal
 * stream systemd set up (a child that inherited JOURNAL_STREAM but writes to a
 * pipe is not), `text` on a terminal, `json` otherwise (a pipe, a file: a
 * program reads it).
 */
export const chooseLogFormat = (fd: number, journalStream = process.env.JOURNAL_STREAM): LogFormat =>
  isJournalStream(fd, journalStream) ? 'journal' : isatty(fd) ? 'text' : 'json'

const checkFormat = (format: string, key: string): LogFormat => {
  if (!(LOG_FORMATS as readonly string[]).includes(format)) throw new ConfigError(key, `${JSON.stringify(format)} is not one of ${LOG_FORMATS.join(', ')}`)
  return format as LogFormat
}

/** The format a logger on `fd` writes: BOOT_AGENT_LOG_FORMAT, else `asked`, else chooseLogFormat. */
export const logFormatFor = (fd: number, asked?: string): LogFormat => {
  const env = process.env.BOOT_AGENT_LOG_FORMAT
  if (env !== undefined && env !== '') return checkFormat(env, 'BOOT_AGENT_LOG_FORMAT')
  return asked !== undefined ? checkFormat(asked, '--log-format') : chooseLogFormat(fd)
}

/**
 * A pino destination that writes each record in `format` with one write(2)
 * (synchronous: see the top). In a dracut-hook initramfs (no journald) the hook
 * copies these lines into the kernel log (dracut/50boot-agent/boot-agent-root.sh),
 * crash output included: the logger makes no copy of its own.
 */
const destination = (fd: number, format: LogFormat): { write: (line: string) => void } => ({
  write: (line: string): void => {
    let rec: Record<string, unknown>
    try {
      rec = JSON.parse(line) as Record<string, unknown>
    } catch {
      rec = { level: 'info', msg: line.trimEnd() }
    }
    writeSync(fd, format === 'json' ? line : formatRecord(rec, format))
  },
})

export const createLogger = (opts: LoggerOptions = {}): Logger => {
  const env = process.env.BOOT_AGENT_LOG_LEVEL
  const level = env ?? opts.level ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(env !== undefined ? 'BOOT_AGENT_LOG_LEVEL' : 'log level', `${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`)
  }
  const fd = opts.fd ?? 2
  const format = logFormatFor(fd, opts.format)
  return lazyLogger(() => {
    const pino = loadPino()
    return pino(
      {
        // No `name`: pino would write it beside a record's own `name` field (an
        // image's name) as a second "name" key; the journal's identifier says who wrote.
        level,
        base: { pid: process.pid },
        timestamp: pino.stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
      },
      format === 'json' ? pino.destination({ fd, sync: true }) : destination(fd, format),
    )
  })
}

/** A logger that writes nothing, for tests and library callers that pass none. */
export const silentLogger = (): Logger => lazyLogger(() => loadPino()({ level: 'silent' }))

/**
 * Runs `fn` as one logged operation: `[started] op`, then `[finished] op` with
 * `durationMs`, or `[failed] op` with the error, which is rethrown.
 */
export const logOp = async <T>(log: Logger, op: string, fields: Record<string, unknown>, fn: () => Promise<T>): Promise<T> => {
  const started = performance.now()
  log.info({ op, ...fields }, `[started] ${op}`)
  try {
    const result = await fn()
    log.info({ op, ...fields, durationMs: Math.round(performance.now() - started) }, `[finished] ${op}`)
    return result
  } catch (err) {
    log.error({ op, ...fields, durationMs: Math.round(performance.now() - started), err }, `[failed] ${op}: ${messageOf(err)}`)
    if (typeof err === 'object' && err !== null) logged.add(err)
    throw err
  }
}

/** Errors whose stack a `[failed]` line already carries. */
const logged = new WeakSet<object>()

/** Whether logOp already logged `err` with its stack (the CLI then logs the exit without it). */
export const wasLogged = (err: unknown): boolean => typeof err === 'object' && err !== null && logged.has(err)
