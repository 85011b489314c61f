/**
 * agent/core/log.ts: pino loads at a logger's first use (not at start), every line
 * is written synchronously, a child made before then keeps its bindings and
 * its parent's level, and a bad BOOT_AGENT_LOG_LEVEL is refused up front.
 * (The bundle's side, pino as chunks/pino.cjs, is in lazy-imports.test.ts.)
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { chooseLogFormat, createLogger, silentLogger, type Logger } from '../../agent/core/log.js'
import { BUNDLE } from '../helpers/run-cli.js'
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
  t.match(first, { level: 'info', image: 'v1', n: 1, msg: 'first' })
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

t.test('a field called name is written once: the logger adds no name key of its own', async (t) => {
  const path = join(t.testdir(), 'log')
  const fd = openSync(path, 'w')
  t.teardown(() => closeSync(fd))
  createLogger({ fd, level: 'info', format: 'json' }).info({ name: 'compute-v7', sha256: 'ab' }, 'name moved')
  const raw = readFileSync(path, 'utf8').trim()
  t.equal(raw.match(/"name":/g)?.length, 1, `one "name" key in ${raw}`)
  t.match(JSON.parse(raw), { name: 'compute-v7', msg: 'name moved' })
})

t.test('the journal format is chosen when stderr is the stream JOURNAL_STREAM names, not when it merely is set', async (t) => {
  const path = join(t.testdir(), 'stream')
  const fd = openSync(path, 'w')
  t.teardown(() => closeSync(fd))
  const st = fstatSync(fd, { bigint: true })
  t.equal(chooseLogFormat(fd, `${st.dev}:${st.ino}`), 'journal')
  t.equal(chooseLogFormat(fd, `${st.dev}:${st.ino + 1n}`), 'json', 'inherited from a parent whose stderr was the journal: a file here')
  t.equal(chooseLogFormat(fd, undefined), 'json', 'a file or a pipe: JSON for the program reading it')
  const saved = { js: process.env.JOURNAL_STREAM, f: process.env.BOOT_AGENT_LOG_FORMAT }
  t.teardown(() => {
    for (const [k, v] of [['JOURNAL_STREAM', saved.js], ['BOOT_AGENT_LOG_FORMAT', saved.f]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  delete process.env.BOOT_AGENT_LOG_FORMAT
  process.env.JOURNAL_STREAM = `${st.dev}:${st.ino}`
  const log = createLogger({ fd, level: 'info' })
  log.error({ device: '/dev/loop3' }, 'squashfs error')
  log.warn('boot fell back')
  log.info('[started] fetch')
  t.equal(readFileSync(path, 'utf8'), '<3>squashfs error device=/dev/loop3\n<4>boot fell back\n<6>[started] fetch\n')
  process.env.BOOT_AGENT_LOG_FORMAT = 'loud'
  t.throws(() => createLogger({ fd }), { key: 'BOOT_AGENT_LOG_FORMAT', message: /"loud" is not one of journal, text, json/ })
})

/**
 * Runs the bundle without blocking this process (the test's server answers it),
 * its standard error to `stderrFd` or a pipe; bounded by a 60 s kill.
 */
const runBundle = (args: string[], env: Record<string, string | undefined>, stderrFd?: number): Promise<{ status: number | null; stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [BUNDLE, ...args], {
      stdio: ['ignore', 'ignore', stderrFd ?? 'pipe'],
      env: Object.fromEntries(Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined)),
    })
    let stderr = ''
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('close', (status) => {
      clearTimeout(timer)
      resolve({ status, stderr })
    })
  })

/** A head that answers 404 to everything: fetch fails at once, inside logOp. */
const notFoundServer = async (t: Test): Promise<string> => {
  const server = createServer((_req, res) => res.writeHead(404).end('no'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

t.test('a failing command prints its stack trace once', async (t) => {
  const url = await notFoundServer(t)
  const r = await runBundle(['fetch', `${url}/m.json`, '--cache', join(t.testdir(), 'cache')], { BOOT_AGENT_LOG_LEVEL: 'info', BOOT_AGENT_LOG_FORMAT: 'json' })
  t.equal(r.status, 1, r.stderr)
  const stacks = r.stderr.split('\n').filter((l) => l.startsWith('{')).filter((l) => /"stack":/.test(l))
  t.equal(stacks.length, 1, `one JSON line carries a stack:\n${r.stderr}`)
  t.match(r.stderr, /boot-agent fetch: .*404/, 'and the plain line for the operator')
})

t.test('under the journal a failing command writes its error at err, prose, no JSON, nothing at info twice', async (t) => {
  const url = await notFoundServer(t)
  const dir = t.testdir()
  const path = join(dir, 'journal-stream')
  const fd = openSync(path, 'w')
  t.teardown(() => closeSync(fd))
  const st = fstatSync(fd, { bigint: true })
  const r = await runBundle(['fetch', `${url}/m.json`, '--cache', join(dir, 'cache')],
    { BOOT_AGENT_LOG_LEVEL: 'info', BOOT_AGENT_LOG_FORMAT: undefined, JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd)
  t.equal(r.status, 1)
  const lines = readFileSync(path, 'utf8').trim().split('\n')
  t.ok(lines.every((l) => /^<[0-7]>/.test(l)), `every line has a priority prefix:\n${lines.join('\n')}`)
  t.notOk(lines.some((l) => l.includes('{"')), 'no JSON')
  const errs = lines.filter((l) => l.startsWith('<3>'))
  t.ok(errs.some((l) => /^<3>\[failed\] fetch-manifest: .*404/.test(l)), 'the failed operation at err')
  t.ok(errs.some((l) => /^<3>.*404.* code=E/.test(l)), 'the exit reason at err, its code as a fact')
  t.notOk(lines.some((l) => l.startsWith('<6>') && l.includes('404')), 'the error is not repeated at info')
})

t.test('in a dracut-hook initramfs the logger makes no kernel-log copy of its own: the hook\'s pipe is the one copy', async (t) => {
  // dracut/50boot-agent/boot-agent-root.sh pipes the stage's output, crash output
  // included, into /dev/kmsg (proven by test/vm/debian.test.ts, hook scenario). A
  // second copy from the logger would put every line twice in the booted journal.
  const dir = t.testdir()
  const release = join(dir, 'initrd-release')
  const kmsg = join(dir, 'kmsg')
  writeFileSync(release, 'NAME=dracut\n')
  for (const format of ['json', 'text', 'journal']) {
    writeFileSync(kmsg, '')
    const r = await runBundle(['verify', '--cache', join(dir, 'missing')], { BOOT_AGENT_INITRD_RELEASE: release, BOOT_AGENT_DEV_KMSG: kmsg, BOOT_AGENT_LOG_FORMAT: format })
    t.equal(r.status, 1)
    t.match(r.stderr, /no cache at/, `${format}: the line is on standard error, where the hook's pipe reads it`)
    t.equal(readFileSync(kmsg, 'utf8'), '', `${format}: nothing written to the kernel log by the agent itself`)
  }
})
