import t, { type Test } from 'tap'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { acquireLock, LockedError, pidAlive, withLock } from '../../agent/core/lock.js'

const bootId = async (): Promise<string> => (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()

/** The pid of a process that has just exited (not alive, not yet reused). */
const deadPid = async (): Promise<number> => {
  const child = spawn(process.execPath, ['-e', ''])
  return new Promise<number>((r) => child.on('exit', () => r(child.pid!)))
}

/** A racer process (test/helpers/lock-racer.ts) and a way to send it a command and read its one-line answer. */
const racer = (t: Test) => {
  // The same loaders as this test (TypeScript), as tap starts a test file.
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [...process.execArgv, new URL('../helpers/lock-racer.ts', import.meta.url).pathname])
  t.teardown(() => void child.kill('SIGKILL'))
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  return {
    pid: child.pid!,
    send: async (cmd: string): Promise<string> => {
      child.stdin.write(cmd + '\n')
      const r = await lines.next()
      return r.done ? 'exited' : r.value
    },
  }
}

t.test('pidAlive: a running process (ours, init) is alive; an exited one is not', async (t) => {
  t.equal(pidAlive(process.pid), true)
  t.equal(pidAlive(1), true, 'init: alive, whoever may signal it (EPERM counts as alive)')
  t.equal(pidAlive(await deadPid()), false)
})

t.test('processes racing for a stale lock: exactly one wins each time', async (t) => {
  const racers = [racer(t), racer(t), racer(t)]
  const dir = t.testdir()
  const boot = await bootId()
  for (let round = 0; round < 12; round++) {
    const path = join(dir, `r${round}.lock`)
    // Stale both ways the agent meets: an owner that died this boot, and a lock of an earlier boot (old format, no nonce).
    await writeFile(path, round % 2 ? `${await deadPid()}\n${boot}\n` : `1\nan-earlier-boot\n`)
    const answers = await Promise.all(racers.map((r) => r.send(`go ${path}`)))
    t.equal(answers.filter((a) => a === 'won').length, 1, `round ${round}: one winner (${answers.join(', ')})`)
    t.equal(answers.filter((a) => a === 'locked').length, racers.length - 1, `round ${round}: the others found it held`)
    const winner = racers[answers.indexOf('won')]!
    t.equal((await readFile(path, 'utf8')).split('\n')[0], String(winner.pid), `round ${round}: the lock names the winner`)
    t.equal(await winner.send('release'), 'released')
  }
  t.same(await readdir(dir), [], 'no lock, guard or temp file left')
})

t.test('a live holder makes others wait, then ELOCKED naming it; released, the next one gets it', async (t) => {
  const path = join(t.testdir(), 'x.lock')
  const holder = racer(t)
  t.equal(await holder.send(`go ${path}`), 'won')
  const waits: number[] = []
  let now = 0
  const err = await acquireLock(path, {
    timeoutMs: 1000,
    pollMs: 100,
    clock: { now: () => now },
    sleep: async (ms) => {
      waits.push(ms)
      now += ms
    },
    onWait: (o) => t.equal(o.pid, holder.pid, 'told who holds it'),
  }).catch((e: unknown) => e)
  t.type(err, LockedError)
  t.match(err, { code: 'ELOCKED', path, pid: holder.pid, message: `lock ${path} is held by pid ${holder.pid}` })
  t.equal(waits.length, 11, 'polled until the injected clock passed the deadline')
  t.equal(await holder.send('release'), 'released')
  const l = await acquireLock(path, { timeoutMs: 0 })
  await l.release()
})

t.test('a takeover interrupted by a kill (its guard left behind) does not wedge the lock', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'y.lock')
  const boot = await bootId()
  const nonce = '0123456789abcdef'
  await writeFile(path, `${await deadPid()}\n${boot}\n${nonce}\n`)
  await writeFile(`${path}.takeover-${nonce}`, `${await deadPid()}\n${boot}\nfedcba9876543210\n`)
  const l = await acquireLock(path, { timeoutMs: 0 })
  t.equal((await readFile(path, 'utf8')).split('\n')[0], String(process.pid), 'taken over')
  await l.release()
  t.same(await readdir(dir), [], 'the stale guard went with it')
})

t.test('withLock holds the lock while fn runs and releases it however fn ends', async (t) => {
  const path = join(t.testdir(), 'z.lock')
  t.equal(await withLock(path, async () => (await readFile(path, 'utf8')).split('\n')[0]), String(process.pid))
  await t.rejects(withLock(path, async () => Promise.reject(new Error('boom'))), /boom/)
  await t.rejects(readFile(path), { code: 'ENOENT' }, 'released after a throw')
})

t.test('an empty lock (one an older agent is writing) gets one poll before it counts as stale', async (t) => {
  const path = join(t.testdir(), 'e.lock')
  await writeFile(path, '')
  const waits: number[] = []
  const l = await acquireLock(path, { timeoutMs: 0, sleep: async (ms) => void waits.push(ms) })
  t.same(waits, [100], 'one poll')
  await l.release()
})
