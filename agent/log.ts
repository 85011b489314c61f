/**
 * Structured JSON logs (pino) to standard error, which systemd sends to the
 * journal. Logging is synchronous: in the initramfs switch_root kills every
 * process, and a buffered line would be lost with it (SPEC §11).
 *
 * Operations are logged as `[started]` / `[finished]` / `[failed]` with their
 * duration (after ignition's LogOp), not as chatter.
 */
import { pino, type Logger } from 'pino'
import { messageOf } from './errors.js'

export type { Logger }

export interface LoggerOptions {
  /** pino level; `BOOT_AGENT_LOG_LEVEL` overrides. Default `info`. */
  level?: string
  /** File descriptor to write to. Default 2 (stderr). */
  fd?: number
}

export const createLogger = (opts: LoggerOptions = {}): Logger =>
  pino(
    {
      name: 'boot-agent',
      level: process.env.BOOT_AGENT_LOG_LEVEL ?? opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: opts.fd ?? 2, sync: true }),
  )

/** A logger that writes nothing, for tests and library callers that pass none. */
export const silentLogger = (): Logger => pino({ level: 'silent' })

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
    throw err
  }
}
