import t from 'tap'
import { planEviction } from '../../agent/cache/evict.js'

const objs = [
  { sha256: 'a', size: 100, lastUsedAt: 3 },
  { sha256: 'b', size: 100, lastUsedAt: 1 },
  { sha256: 'c', size: 100, lastUsedAt: 2 },
]

t.test('least recently used go first until enough bytes are free', async (t) => {
  t.same(planEviction(objs, { needBytes: 150 }).map((o) => o.sha256), ['b', 'c'])
  t.same(planEviction(objs, { needBytes: 0 }), [])
})

t.test('pinned objects are never planned, even when space is short', async (t) => {
  t.same(planEviction(objs, { needBytes: 1000, pinned: ['b', 'a'] }).map((o) => o.sha256), ['c'])
})

t.test('keep N leaves the N most recently used (pinned ones count)', async (t) => {
  t.same(planEviction(objs, { keep: 1 }).map((o) => o.sha256), ['b', 'c'])
  t.same(planEviction(objs, { keep: 2, pinned: ['b'] }).map((o) => o.sha256), ['c'])
})
