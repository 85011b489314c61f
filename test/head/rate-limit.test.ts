import t from 'tap'
import { RateLimiter } from '../../agent/head/rate-limit.js'

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
