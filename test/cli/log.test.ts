/**
 * agent/core/log.ts: pino loads at a logger's first use (not at start), every line
 * is written synchronously, a child made before then keeps its bindings and
 * its parent's level, and a bad BOOT_AGENT_LOG_LEVEL is refused up front.
 * (The bundle's side, pino as chunks/pino.cjs, is in lazy-imports.test.ts.)
 */
import t, { type Test } from 'tap'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createLogger, silentLogger, type Logger } from '../../agent/core/log.js'
import { ConfigError } from '../../agent/core/errors.js'

const pinoLoaded = (): boolean => Object.keys(createRequire(import.meta.url).cache).some((p) => /[/\\]node_modules[/\\]pino[/\\]pino\.js$/.test(p))

/** A logger at `info` writing to a file of the test's, and a reader of the lines written so far. */
const fileLogger = (t: Test): { log: Logger; lines: () => Record<string, unknown>[] } => {
  const path = join(t.testdir(), 'log')
  const fd = openSync(path, 'w')
  t.teardown(() => closeSync(fd))
  const lines = (): Record<string, unknown>[] =>
    readFileSync(path, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  return { log: createLogger({ fd, level: 'info' }), lines }
}

t.test('pino is loaded at the first line, which is on disk when the call returns', async (t) => {
  const { log, lines } = fileLogger(t)
  const child = log.child({ image: 'v1' })
  t.equal(pinoLoaded(), false, 'making a logger and a child loads nothing')
  child.info({ n: 1 }, 'first')
  t.equal(pinoLoaded(), true)
  const [first] = lines()
  t.match(first, { level: 'info', name: 'boot-agent', image: 'v1', n: 1, msg: 'first' })
  log.debug('below the level')
  log.warn('second')
  t.same(lines().map((l) => l.msg), ['first', 'second'])
})

t.test("a child made before the first line takes its parent's level at its first use", async (t) => {
  const { log, lines } = fileLogger(t)
  const child = log.child({ op: 'x' })
  log.level = 'debug'
  child.debug('shown at debug')
  t.equal(log.level, 'debug')
  t.equal(child.level, 'debug')
  t.match(lines(), [{ level: 'debug', op: 'x', msg: 'shown at debug' }])
  t.equal(typeof log.isLevelEnabled, 'function')
  t.equal(log.isLevelEnabled('trace'), false)
})

t.test('a bad BOOT_AGENT_LOG_LEVEL is an error naming it, before anything runs', async (t) => {
  const saved = process.env.BOOT_AGENT_LOG_LEVEL
  t.teardown(() => {
    if (saved === undefined) delete process.env.BOOT_AGENT_LOG_LEVEL
    else process.env.BOOT_AGENT_LOG_LEVEL = saved
  })
  process.env.BOOT_AGENT_LOG_LEVEL = 'loud'
  const e = t.throws(() => createLogger())
  t.ok(e instanceof ConfigError, 'a configuration error (exit 2 from the CLI)')
  t.match(e, { key: 'BOOT_AGENT_LOG_LEVEL', message: /"loud" is not one of fatal, error, warn, info, debug, trace, silent/ })
  delete process.env.BOOT_AGENT_LOG_LEVEL
  t.throws(() => createLogger({ level: 'chatty' }), /log level: "chatty" is not one of/)
  process.env.BOOT_AGENT_LOG_LEVEL = 'error'
  t.equal(createLogger({ level: 'debug' }).level, 'error', 'the variable overrides the option')
})

t.test('silentLogger writes nothing and takes children', async (t) => {
  const log = silentLogger()
  log.error('nothing')
  t.equal(log.child({ a: 1 }).level, 'silent')
})
