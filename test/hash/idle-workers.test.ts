import t from 'tap'
import { once } from 'node:events'
import { Worker } from 'node:worker_threads'
import { IdleWorkers } from '../../agent/hash/idle-workers.js'

// A worker that answers each message with the thread's id, so a test can tell workers apart.
const ECHO = `const { parentPort, threadId } = require('node:worker_threads')
parentPort.on('message', (m) => (m === 'exit' ? process.exit(3) : parentPort.postMessage(threadId)))`

const ask = async (w: Worker): Promise<number> => {
  w.postMessage('who')
  const [id] = (await once(w, 'message')) as [number]
  return id
}

/** Polls until `cond` holds (at most `ms`). */
const until = async (cond: () => boolean, ms = 5000): Promise<boolean> => {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  return cond()
}

t.test('take starts a worker when none is idle; a parked one is taken next instead of a new one', async (t) => {
  let started = 0
  const pool = new IdleWorkers(() => (started++, new Worker(ECHO, { eval: true })))
  t.teardown(() => pool.end())
  const w = pool.take()
  const id = await ask(w)
  t.equal(started, 1)
  pool.park(w)
  t.equal(pool.size, 1)
  const again = pool.take()
  t.equal(again, w, 'the parked worker')
  t.equal(await ask(again), id)
  t.equal(started, 1, 'none started')
  t.equal(pool.size, 0)
  pool.park(again)
})

t.test('prewarm starts workers until that many are idle, no more', async (t) => {
  let started = 0
  const pool = new IdleWorkers(() => (started++, new Worker(ECHO, { eval: true })))
  pool.prewarm(2)
  pool.prewarm(2)
  t.equal(pool.size, 2)
  t.equal(started, 2, 'a second call adds none')
  pool.prewarm(3)
  t.equal(pool.size, 3)
  await pool.end()
  t.equal(pool.size, 0, 'end() ends the idle ones')
})

t.test('a parked worker is ended after idleMs; one that exits while idle leaves the pool', async (t) => {
  const pool = new IdleWorkers(() => new Worker(ECHO, { eval: true }), { idleMs: 50 })
  t.teardown(() => pool.end())
  const w = pool.take()
  await ask(w)
  let exited = false
  w.once('exit', () => (exited = true))
  pool.park(w)
  t.equal(pool.size, 1)
  // Polled with ref'd timers: a parked worker and its timer keep nothing alive, by design.
  t.ok(await until(() => exited), 'ended after idleMs')
  t.equal(pool.size, 0, 'and gone from the pool')
  const slow = new IdleWorkers(() => new Worker(ECHO, { eval: true }))
  t.teardown(() => slow.end())
  const v = slow.take()
  await ask(v)
  slow.park(v)
  v.postMessage('exit')
  t.ok(await until(() => slow.size === 0), 'a worker that died while idle is gone from the pool')
  const u = slow.take()
  t.not(u, v, 'and never taken again')
  await u.terminate()
})
