/**
 * Structured JSON logs to standard error, which systemd sends to the
 * journal. Logging is synchronous: in the initramfs switch_root kills every
 * process, and a buffered line would be lost with it (SPEC §11).
 *
 * Lines are what pino wrote before (`{"level":"info","time":ISO,"pid":N,
 * "name":"boot-agent",…fields,"msg":…}`, errors under `err` as pino's
 * standard serializer writes them), from a few lines of code: loading pino
 * (with sonic-boom, thread-stream and their worker_threads, assert and
 * diagnostics_channel) cost every command 15–30 ms of start-up
 * (docs/performance.md, "Boot stage"), and the agent uses only this much.
 *
 * Operations are logged as `[started]` / `[finished]` / `[failed]` with their
 * duration (after ignition's LogOp), not as chatter.
 */
import { writeSync } from 'node:fs'
import { messageOf } from './errors.js'

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const
export type LevelName = keyof typeof LEVELS

export interface LogFn {
  /** `fields` go into the line; an Error passed as `fields` is logged as `err`. */
  (fields: object, msg?: string): void
  (msg: string): void
}

export interface Logger {
  readonly level: LevelName
  trace: LogFn
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
  fatal: LogFn
  /** A logger whose lines also carry `bindings`. */
  child(bindings: Record<string, unknown>): Logger
  isLevelEnabled(level: LevelName): boolean
}

export interface LoggerOptions {
  /** Level name; `BOOT_AGENT_LOG_LEVEL` overrides. Default `info`. */
  level?: string
  /** File descriptor to write to. Default 2 (stderr). */
  fd?: number
}

const isErrorLike = (v: unknown): v is Error => typeof v === 'object' && v !== null && typeof (v as { message?: unknown }).message === 'string'

const causeOf = (e: Error): Error | undefined => {
  const c = (e as { cause?: unknown }).cause
  return isErrorLike(c) ? c : undefined
}

/** pino-std-serializers' `err`: type, message and stack with their causes', then the error's enumerable fields. */
const serializeError = (err: Error, seen: Set<Error> = new Set()): Record<string, unknown> => {
  seen.add(err)
  const out: Record<string, unknown> = {
    type: typeof err.constructor === 'function' ? err.constructor.name : err.name,
    message: chain(err, (e) => e.message || '', ': '),
    stack: chain(err, (e) => e.stack || '', '\ncaused by: '),
  }
  const errors = (err as { errors?: unknown }).errors
  if (Array.isArray(errors)) out.aggregateErrors = errors.map((e) => (isErrorLike(e) && !seen.has(e) ? serializeError(e, seen) : e))
  for (const key in err) {
    if (out[key] !== undefined) continue
    const v = (err as unknown as Record<string, unknown>)[key]
    if (isErrorLike(v)) {
      // Causes are already in message and stack.
      if (key !== 'cause' && !seen.has(v)) out[key] = serializeError(v, seen)
    } else out[key] = v
  }
  return out
}

const chain = (err: Error, part: (e: Error) => string, sep: string): string => {
  const seen = new Set<Error>()
  let s = part(err)
  for (let e = causeOf(err); e; e = causeOf(e)) {
    if (seen.has(e)) return `${s}${sep}…(circular)`
    seen.add(e)
    s += sep + part(e)
  }
  return s
}

/** JSON of a line's fields; circular references and bigints do not lose the line. */
const stringify = (o: object): string => {
  try {
    return JSON.stringify(o)
  } catch {
    const stack: unknown[] = []
    return JSON.stringify(o, function (this: unknown, _key, value: unknown) {
      if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString()
      if (typeof value !== 'object' || value === null) return value
      while (stack.length > 0 && stack.at(-1) !== this) stack.pop()
      if (stack.includes(value)) return '[Circular]'
      stack.push(value)
      return value
    })
  }
}

const sleepMs = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** Longest wait on a full non-blocking pipe before a line is dropped. */
const EAGAIN_BUDGET_MS = 30_000

/**
 * Writes the whole line, synchronously. A full non-blocking pipe (EAGAIN) is
 * waited on, as sonic-boom did; any other failure drops the line: logging
 * must never be what fails a boot.
 */
const writeLine = (fd: number, line: string): void => {
  const buf = Buffer.from(line)
  let off = 0
  let waited = 0
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || waited >= EAGAIN_BUDGET_MS) return
      sleepMs(10)
      waited += 10
    }
  }
}

const makeLogger = (min: number, level: LevelName, fd: number, prefix: string): Logger => {
  const at = (name: Exclude<LevelName, 'silent'>): LogFn => {
    if (LEVELS[name] < min) return () => {}
    const head = `{"level":"${name}","time":"`
    return (a: object | string, msg?: string): void => {
      let fields: object | undefined
      if (typeof a === 'string') msg = a
      else if (isErrorLike(a)) {
        fields = { err: serializeError(a) }
        msg ??= a.message
      } else {
        const err = (a as { err?: unknown }).err
        fields = isErrorLike(err) ? { ...a, err: serializeError(err) } : a
      }
      let body = fields ? stringify(fields).slice(1, -1) : ''
      if (msg !== undefined) body += `${body ? ',' : ''}"msg":${JSON.stringify(msg)}`
      writeLine(fd, `${head}${new Date().toISOString()}"${prefix}${body ? ',' : ''}${body}}\n`)
    }
  }
  return {
    level,
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: at('fatal'),
    child: (bindings) => {
      const b = stringify(bindings).slice(1, -1)
      return makeLogger(min, level, fd, b ? `${prefix},${b}` : prefix)
    },
    isLevelEnabled: (l) => LEVELS[l] >= min,
  }
}

const levelOf = (name: string): LevelName => {
  if (!Object.hasOwn(LEVELS, name)) throw new Error(`unknown log level ${JSON.stringify(name)} (one of ${Object.keys(LEVELS).join(', ')})`)
  return name as LevelName
}

export const createLogger = (opts: LoggerOptions = {}): Logger => {
  const level = levelOf(process.env.BOOT_AGENT_LOG_LEVEL ?? opts.level ?? 'info')
  return makeLogger(LEVELS[level], level, opts.fd ?? 2, `,"pid":${process.pid},"name":"boot-agent"`)
}

/** A logger that writes nothing, for tests and library callers that pass none. */
export const silentLogger = (): Logger => makeLogger(Infinity, 'silent', 2, '')

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
