import t from 'tap'
import type { Chunk } from '../../agent/manifest/types.js'
import { chunkAt, planRanges } from '../../agent/transport/plan.js'

const chunks: Chunk[] = [10, 20, 30, 40, 50].map((size, index, a) => ({ index, size, offset: a.slice(0, index).reduce((n, x) => n + x, 0), sha256: '0'.repeat(64) }))

t.test('runs of consecutive missing chunks become single ranges', async (t) => {
  t.same(planRanges(chunks, [0, 1, 3, 4], 1000), [
    { start: 0, end: 30, chunks: [0, 1] },
    { start: 60, end: 150, chunks: [3, 4] },
  ])
})

t.test('a run longer than the range limit is split at chunk boundaries', async (t) => {
  t.same(planRanges(chunks, [0, 1, 2, 3, 4], 60).map((r) => r.chunks), [[0, 1, 2], [3], [4]])
})

t.test('duplicates and unknown indexes are ignored; nothing missing plans nothing', async (t) => {
  t.same(planRanges(chunks, [2, 2, 9], 1000), [{ start: 30, end: 60, chunks: [2] }])
  t.same(planRanges(chunks, [], 1000), [])
})

t.test('chunkAt names the chunk holding a byte', async (t) => {
  // chunks: [0,10) [10,30) [30,60) [60,100) [100,150)
  t.same([0, 9, 10, 29, 30, 99, 100, 149].map((pos) => chunkAt(chunks, pos)), [0, 0, 1, 1, 2, 3, 4, 4])
})
