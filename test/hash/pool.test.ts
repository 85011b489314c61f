/**
 * The one hash pool (agent/hash/pool.ts): sha256 ranges and xxh64 segments
 * run on the same workers, whichever kind of call started them.
 */
import t from 'tap'
import { createHash, randomFillSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import xxhash from 'xxhash-wasm'
import { endIdleHashWorkers, idleHashWorkers, prewarmHashWorkers } from '../../agent/hash/pool.js'
import { hashRanges } from '../../agent/hash/ranges.js'
import { prewarmXxh64Workers, xxh64Segments } from '../../agent/hash/segments.js'
import { XXH64_SEGMENT_BYTES } from '../../agent/hash/xxh64-format.js'

const SEG = XXH64_SEGMENT_BYTES

/** A file of three segments and a tail, with its xxh64 per segment and sha256 per MiB, computed the plain way. */
const fixture = async (dir: string) => {
  const data = Buffer.allocUnsafe(3 * SEG + 4321)
  randomFillSync(data)
  const path = join(dir, 'image')
  writeFileSync(path, data)
  const { h64Raw } = await xxhash()
  const xxh64: string[] = []
  for (let off = 0; off < data.length; off += SEG) xxh64.push(h64Raw(data.subarray(off, off + SEG)).toString(16).padStart(16, '0'))
  const ranges = Array.from({ length: Math.ceil(data.length / (1 << 20)) }, (_, i) => ({ offset: i << 20, size: Math.min(1 << 20, data.length - (i << 20)) }))
  const sha256 = ranges.map((r) => createHash('sha256').update(data.subarray(r.offset, r.offset + r.size)).digest('hex'))
  return { path, xxh64, ranges, sha256 }
}

t.test('workers started for sha256 hash xxh64 segments next, and the other way round, none started anew', async (t) => {
  const f = await fixture(t.testdir())
  await endIdleHashWorkers()
  prewarmHashWorkers(2) // without xxhash-wasm: it is sent with the first xxh64 call
  t.equal(idleHashWorkers(), 2)
  const fast = await xxh64Segments(f.path, { threads: 2, offThread: true })
  t.same(fast.xxh64, f.xxh64, 'xxh64 on workers prewarmed for sha256')
  t.equal(fast.threads, 2)
  t.equal(idleHashWorkers(), 2, 'the same two parked again')
  t.same(await hashRanges(f.path, f.ranges, { workers: 2 }), f.sha256, 'then sha256 on the same workers')
  t.equal(idleHashWorkers(), 2, 'still two: one pool')
  t.same((await xxh64Segments(f.path, { threads: 3 })).xxh64, f.xxh64, 'and xxh64 again, with this thread')
  t.equal(idleHashWorkers(), 2)
  await endIdleHashWorkers()
  await prewarmXxh64Workers(2) // with xxhash-wasm, instantiated as they start
  t.same(await hashRanges(f.path, f.ranges, { workers: 2 }), f.sha256, 'sha256 on workers prewarmed for xxh64')
  t.same((await xxh64Segments(f.path, { threads: 2, offThread: true })).xxh64, f.xxh64)
  t.equal(idleHashWorkers(), 2)
  await endIdleHashWorkers()
  t.equal(idleHashWorkers(), 0)
})
