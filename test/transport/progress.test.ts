import t from 'tap'
import { silentLogger } from '../../agent/core/log.js'
import { Progress, type ProgressInfo } from '../../agent/transport/progress.js'

t.test('progress is reported every interval or each 10 %, with rate and ETA', async (t) => {
  let now = 0
  const seen: ProgressInfo[] = []
  const p = new Progress(10_000, silentLogger(), {}, (i) => seen.push(i), 2000, () => now)
  for (let i = 0; i < 100; i++) {
    now += 10
    p.add(1)
  }
  t.equal(seen.length, 0, 'no report for tiny steps within the interval')
  now += 2000
  p.add(1)
  t.equal(seen.length, 1, 'the interval passed')
  t.equal(seen[0]!.bytes, 101)
  t.ok(Math.abs(seen[0]!.rate - 101 / 3) < 0.01, 'bytes per second')
  t.ok(Math.abs(seen[0]!.etaS! - (10_000 - 101) / (101 / 3)) < 0.01)
  p.add(1000)
  t.equal(seen.length, 2, 'crossing 10 % reports within the interval')
})
