import t from 'tap'
import { sleep, systemClock } from '../../agent/core/clock.js'

t.test('the system clock reads the real time', async (t) => {
  const before = Date.now()
  const now = systemClock.now()
  t.ok(now >= before && now <= Date.now())
})

t.test('sleep resolves after the time', async (t) => {
  const started = performance.now()
  await sleep(20)
  t.ok(performance.now() - started >= 15, 'it waited')
})

t.test('sleep rejects with the abort reason, aborted before or during the wait', async (t) => {
  const why = new Error('stop')
  await t.rejects(sleep(10, AbortSignal.abort(why)), why, 'already aborted')
  const ac = new AbortController()
  const started = performance.now()
  const p = sleep(60_000, ac.signal)
  setImmediate(() => ac.abort(why))
  await t.rejects(p, why, 'aborted during')
  t.ok(performance.now() - started < 10_000, 'without waiting the time out')
})

t.test('a finished sleep leaves no listener on the signal', async (t) => {
  const ac = new AbortController()
  let added = 0
  let removed = 0
  const add = ac.signal.addEventListener.bind(ac.signal)
  const remove = ac.signal.removeEventListener.bind(ac.signal)
  ac.signal.addEventListener = ((...a: Parameters<typeof add>) => {
    added++
    add(...a)
  }) as typeof add
  ac.signal.removeEventListener = ((...a: Parameters<typeof remove>) => {
    removed++
    remove(...a)
  }) as typeof remove
  for (let i = 0; i < 3; i++) await sleep(1, ac.signal)
  t.equal(added, 3)
  t.equal(removed, 3)
})
