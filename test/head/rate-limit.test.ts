import t from 'tap'
import { LogThrottle, RateLimiter } from '../../agent/head/rate-limit.js'

t.test('a node may burst, then earns events back at the configured rate', async (t) => {
  let now = 0
  const rl = new RateLimiter({ burstEvents: 10, eventsPerSecond: 5, now: () => now })
  t.equal(rl.take('n1', 10), 0)
  t.equal(rl.take('n1', 1), 200, 'one event needs 200 ms at 5/s')
  t.equal(rl.take('n2', 5), 0, 'other nodes have their own bucket')
  now += 1000
  t.equal(rl.take('n1', 5), 0)
  t.equal(rl.take('n1', 5), 1000)
  rl.refund('n1', 5)
  t.equal(rl.take('n1', 5), 0, 'refunded (duplicates cost nothing)')
})

t.test('a throttled warning passes once per interval per key, by the given clock', async (t) => {
  let now = 1_000_000
  const w = new LogThrottle(60_000, () => now)
  t.equal(w.due('/v1/nodes/flood/events'), true)
  t.equal(w.due('/v1/nodes/flood/events'), false)
  t.equal(w.due('/v1/nodes/other/events'), true, 'each key has its own interval')
  now += 60_001
  t.equal(w.due('/v1/nodes/flood/events'), true)
})
