import t from 'tap'
import { orderMirrors, seededRandom } from '../../agent/transport/mirrors.js'

const urls = ['http://a/i', 'http://b/i', 'http://c/i']

t.test('each node has a stable mirror order, and nodes spread over the mirrors', async (t) => {
  t.same(orderMirrors(urls, 'node1'), orderMirrors(urls, 'node1'))
  t.same([...orderMirrors(urls, 'node1')].sort(), urls, 'a permutation')
  const firsts = new Map<string, number>()
  for (let i = 0; i < 300; i++) {
    const f = orderMirrors(urls, `node${i}`)[0]!
    firsts.set(f, (firsts.get(f) ?? 0) + 1)
  }
  for (const u of urls) t.ok((firsts.get(u) ?? 0) > 60, `${u} is first for a fair share (${firsts.get(u)})`)
})

t.test('removing a mirror only moves the nodes that started on it', async (t) => {
  let moved = 0
  for (let i = 0; i < 200; i++) {
    const before = orderMirrors(urls, `n${i}`)[0]
    const after = orderMirrors(urls.filter((u) => u !== 'http://c/i'), `n${i}`)[0]
    if (before !== 'http://c/i' && before !== after) moved++
  }
  t.equal(moved, 0)
})

t.test('the seeded generator is deterministic and in [0, 1)', async (t) => {
  const a = seededRandom('x')
  const b = seededRandom('x')
  const xs = Array.from({ length: 100 }, () => a())
  t.same(xs, Array.from({ length: 100 }, () => b()))
  t.ok(xs.every((x) => x >= 0 && x < 1))
})
