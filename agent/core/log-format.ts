/**
 * How a log record reads where it lands (pure; agent/core/log.ts writes it).
 *
 * - `journal`: standard error is the journal (systemd's JOURNAL_STREAM names
 *   it). Each line starts with the `<N>` syslog priority prefix that
 *   journald's stream transport parses (SyslogLevelPrefix=, default yes; see
 *   systemd.exec(5) and sd-daemon(3)), so `journalctl -p err` and `-p warning`
 *   filter. Then the sentence, then the facts as `key=value`: the journal
 *   stores the line, without its prefix, as MESSAGE and the level as
 *   PRIORITY. (Structured journal fields need the native protocol, a unix
 *   datagram socket Node cannot open; the facts in MESSAGE are what a script
 *   reads from `journalctl -o json`.)
 * - `text`: a terminal. Time, level, sentence, facts.
 * - `json`: a pipe or a file. pino's JSON line as it is (not formatted here).
 */

export const LOG_FORMATS = ['journal', 'text', 'json'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

/** syslog(3) priorities by pino level name: err for errors, warning for warnings. */
export const SYSLOG_PRIORITY: Record<string, number> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 }

/** Level names as `journalctl -p` spells them, for the terminal. */
const TEXT_LEVEL: Record<string, string> = { fatal: 'crit', error: 'err', warn: 'warning', info: 'info', debug: 'debug', trace: 'debug' }

/** What every record carries and the line says otherwise (the journal has time and pid). */
const NOT_FACTS = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'err', 'v'])

/** A fact's value: bare when it has no space, quote, `=` or backslash; else JSON. */
export const factValue = (v: unknown): string => {
  if (typeof v === 'string') return /^[^\s"=\\]+$/.test(v) ? v : JSON.stringify(v)
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v)
  return JSON.stringify(v) ?? 'undefined'
}

interface SerializedError {
  type?: string
  message?: string
  stack?: string
  code?: string
}

const isSerializedError = (v: unknown): v is SerializedError => typeof v === 'object' && v !== null

/**
 * The sentence and facts of a pino record: `sentence key=value …`. An error
 * (`err`, pino's serialization or a message string) adds its message to the
 * sentence when the sentence does not already say it, and its code as a fact.
 */
export const prose = (rec: Record<string, unknown>): string => {
  let sentence = typeof rec.msg === 'string' ? rec.msg : ''
  const facts: string[] = []
  const err = rec.err
  const errMessage = typeof err === 'string' ? err : isSerializedError(err) ? err.message : undefined
  if (errMessage && !sentence.includes(errMessage)) sentence = sentence ? `${sentence}: ${errMessage}` : errMessage
  for (const [k, v] of Object.entries(rec)) {
    if (NOT_FACTS.has(k) || v === undefined) continue
    // `[started] fetch` says the op already.
    if (k === 'op' && typeof v === 'string' && sentence.includes(`] ${v}`)) continue
    facts.push(`${k}=${factValue(v)}`)
  }
  if (isSerializedError(err) && typeof err.code === 'string' && rec.code === undefined) facts.push(`code=${factValue(err.code)}`)
  return [sentence, ...facts].filter(Boolean).join(' ')
}

/**
 * A stack worth printing in prose: an unexpected error's. An error with a
 * code (BootAgentError and its subclasses, a system call's errno) is
 * explained by its message; the JSON format keeps every stack.
 */
const unexpectedStack = (rec: Record<string, unknown>): string[] => {
  const err = rec.err
  if (!isSerializedError(err) || typeof err.stack !== 'string') return []
  if (typeof err.code === 'string' && err.code !== 'EUNEXPECTED') return []
  return err.stack.split('\n').slice(1).map((l) => l.trimEnd()).filter(Boolean)
}

const pad2 = (n: number): string => String(n).padStart(2, '0')

/**
 * One pino record as the lines to write for `format` (`journal` or `text`),
 * newline-terminated. An unexpected error's stack follows, one line per
 * frame, at `debug` in the journal (so `-p err` shows the error alone).
 */
export const formatRecord = (rec: Record<string, unknown>, format: Exclude<LogFormat, 'json'>): string => {
  const level = typeof rec.level === 'string' ? rec.level : 'info'
  // One record is one journal entry: a newline inside a message would start another at info.
  const line = prose(rec).replace(/\r?\n/g, ' ')
  const stack = unexpectedStack(rec)
  if (format === 'journal') {
    const p = SYSLOG_PRIORITY[level] ?? 6
    return [`<${p}>${line}`, ...stack.map((s) => `<7>  ${s.trim()}`)].join('\n') + '\n'
  }
  const d = typeof rec.time === 'string' ? new Date(rec.time) : new Date()
  const time = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  return [`${time} ${(TEXT_LEVEL[level] ?? level).padEnd(7)} ${line}`, ...stack.map((s) => `        ${s.trim()}`)].join('\n') + '\n'
}
