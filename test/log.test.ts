import t, { type Test } from 'tap'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { BootAgentError } from '../agent/errors.js'
import { createLogger, type Logger, logOp, silentLogger } from '../agent/log.js'

/** Lines a logger writes to a file, parsed. */
const capture = (t: Test, level: string | undefined, fn: (log: Logger) => void): { raw: string[]; lines: Array<Record<string, unknown>> } => {
  const file = join(t.testdir(), 'log')
  const fd = openSync(file, 'w')
  try {
    fn(createLogger({ fd, ...(level ? { level } : {}) }))
  } finally {
    closeSync(fd)
  }
  const raw = readFileSync(file, 'utf8').split('\n').filter(Boolean)
  return { raw, lines: raw.map((l) => JSON.parse(l) as Record<string, unknown>) }
}

t.beforeEach(() => {
  delete process.env.BOOT_AGENT_LOG_LEVEL
})

t.test('a line is pino-shaped: level label, ISO time, pid, name, fields, msg, in that order', async (t) => {
  const { raw, lines } = capture(t, undefined, (log) => {
    log.info({ op: 'descriptor', n: 1 }, '[started] descriptor')
    log.warn('plain words')
    log.info({ only: 'fields' })
  })
  t.match(raw[0], /^\{"level":"info","time":"\d{4}-\d\d-\d\dT[\d:.]+Z","pid":\d+,"name":"boot-agent","op":"descriptor","n":1,"msg":"\[started\] descriptor"\}$/)
  t.same(lines[1], { level: 'warn', time: lines[1]?.time, pid: process.pid, name: 'boot-agent', msg: 'plain words' })
  t.notOk('msg' in (lines[2] ?? {}), 'no msg key when none is given')
})

t.test('levels below the logger level are not written; BOOT_AGENT_LOG_LEVEL wins over the option', async (t) => {
  const a = capture(t, 'warn', (log) => {
    log.debug('d')
    log.info('i')
    log.warn('w')
    log.error('e')
    t.equal(log.level, 'warn')
    t.notOk(log.isLevelEnabled('info'))
    t.ok(log.isLevelEnabled('error'))
  })
  t.same(a.lines.map((l) => l.msg), ['w', 'e'])
  process.env.BOOT_AGENT_LOG_LEVEL = 'debug'
  const b = capture(t, 'warn', (log) => log.debug('d'))
  t.same(b.lines.map((l) => l.msg), ['d'])
  process.env.BOOT_AGENT_LOG_LEVEL = 'loud'
  t.throws(() => createLogger({ fd: 2 }), /unknown log level "loud"/)
})

t.test('errors under err (or passed alone) are serialized as pino does: type, message and stack with causes, fields', async (t) => {
  const inner = new Error('connect ECONNREFUSED')
  const e = new BootAgentError('ENETWORK', 'cannot fetch http://h/x', { url: 'http://h/x' }, { cause: inner })
  const { lines } = capture(t, undefined, (log) => {
    log.error({ err: e, code: 'ENETWORK' }, 'boot failed')
    log.error(e)
    log.warn({ err: 'already a string' }, 'kept')
  })
  const err = lines[0]?.err as Record<string, unknown>
  t.equal(err.type, 'BootAgentError')
  t.equal(err.message, 'cannot fetch http://h/x: connect ECONNREFUSED')
  t.match(err.stack, /^BootAgentError: cannot fetch http:\/\/h\/x\n[\s\S]*\ncaused by: Error: connect ECONNREFUSED\n/)
  t.equal(err.code, 'ENETWORK')
  t.same(err.context, { url: 'http://h/x' })
  t.notOk('cause' in err, 'the cause is in message and stack, not repeated')
  t.equal(lines[0]?.code, 'ENETWORK')
  t.equal(lines[1]?.msg, 'cannot fetch http://h/x', 'an error alone: its message is the msg')
  t.equal((lines[1]?.err as Record<string, unknown>).type, 'BootAgentError')
  t.equal(lines[2]?.err, 'already a string')
})

t.test('child loggers add their bindings; circular values and bigints do not lose the line', async (t) => {
  const circular: Record<string, unknown> = { a: 1 }
  circular.self = circular
  const { lines } = capture(t, undefined, (log) => {
    const child = log.child({ image: 'CPE-base', sha256: 'ab' })
    child.info({ bytes: 5 }, 'fetched')
    child.child({ chunk: 3 }).warn('retry')
    log.info({ circular, big: 10n }, 'odd values')
  })
  t.same(lines[0], { level: 'info', time: lines[0]?.time, pid: process.pid, name: 'boot-agent', image: 'CPE-base', sha256: 'ab', bytes: 5, msg: 'fetched' })
  t.equal(lines[1]?.chunk, 3)
  t.equal(lines[1]?.image, 'CPE-base')
  t.same(lines[2]?.circular, { a: 1, self: '[Circular]' })
  t.equal(lines[2]?.big, 10)
})

t.test('logOp logs started/finished with the duration, and failed with the error, which it rethrows', async (t) => {
  const file = join(t.testdir(), 'log')
  const fd = openSync(file, 'w')
  const log = createLogger({ fd })
  t.equal(await logOp(log, 'mount', { dev: '/dev/vda1' }, async () => 7), 7)
  await t.rejects(logOp(log, 'fetch', {}, async () => { throw new BootAgentError('EHTTP', 'HTTP 404') }), /HTTP 404/)
  closeSync(fd)
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.same(lines.map((l) => l.msg), ['[started] mount', '[finished] mount', '[started] fetch', '[failed] fetch: HTTP 404'])
  t.equal(typeof lines[1]?.durationMs, 'number')
  t.equal(lines[1]?.dev, '/dev/vda1')
  t.equal(lines[3]?.level, 'error')
  t.equal((lines[3]?.err as Record<string, unknown>).code, 'EHTTP')
})

t.test('the silent logger writes nothing', async (t) => {
  const log = silentLogger()
  log.error('nothing')
  log.child({ a: 1 }).fatal({ b: 2 }, 'still nothing')
  t.equal(log.level, 'silent')
  t.notOk(log.isLevelEnabled('fatal'))
})
