import t from 'tap'
import { XXH64_SEGMENT_BYTES, chunksInSegments } from '../../agent/cache/meta.js'
import type { Chunk } from '../../agent/manifest/types.js'

const SEG = XXH64_SEGMENT_BYTES

t.test('chunksInSegments lists exactly the chunks holding a byte of the given segments', async (t) => {
  const size = 3 * SEG + 100
  const chunks: Chunk[] = []
  // 5 MiB + 7 chunks: some straddle segment boundaries.
  for (let off = 0; off < size; off += 5 * 1024 * 1024 + 7) {
    chunks.push({ index: chunks.length, offset: off, size: Math.min(5 * 1024 * 1024 + 7, size - off), sha256: '0'.repeat(64) })
  }
  const brute = (segs: number[]) =>
    chunks.filter((c) => segs.some((k) => c.offset < (k + 1) * SEG && c.offset + c.size > k * SEG)).map((c) => c.index)
  for (const segs of [[0], [1], [3], [0, 1], [1, 2], [0, 3], [2, 1, 1], [0, 1, 2, 3], []]) {
    t.same(chunksInSegments(chunks, segs).map((c) => c.index), brute(segs), `segments ${segs.join(',') || 'none'}`)
  }
  const straddler = chunks.find((c) => c.offset < SEG && c.offset + c.size > SEG)!
  t.ok(chunksInSegments(chunks, [0]).includes(straddler) && chunksInSegments(chunks, [1]).includes(straddler), 'a chunk across a boundary belongs to both segments')
})
