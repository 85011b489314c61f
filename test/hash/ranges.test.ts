import t, { type Test } from 'tap'
import { createHash, randomFillSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { endIdleHashWorkers, idleHashWorkers, prewarmHashWorkers } from '../../agent/hash/pool.js'
import { hashFile, hashRanges } from '../../agent/hash/ranges.js'

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

const fixture = (t: Test, bytes: number): { path: string; data: Buffer } => {
  const data = Buffer.allocUnsafe(bytes)
  randomFillSync(data)
  const path = join(t.testdir(), 'image')
  writeFileSync(path, data)
  return { path, data }
}

/** Ranges covering all of `data`, of sizes min + (i·step mod spread), and their sha256. */
const contiguousRanges = (data: Buffer, min: number, step: number, spread: number): { ranges: { offset: number; size: number }[]; expected: string[] } => {
  const ranges: { offset: number; size: number }[] = []
  for (let off = 0, i = 0; off < data.length; i++) {
    const size = Math.min(data.length - off, min + ((i * step) % spread))
    ranges.push({ offset: off, size })
    off += size
  }
  return { ranges, expected: ranges.map((r) => sha(data.subarray(r.offset, r.offset + r.size))) }
}

t.test('digests match node:crypto for contiguous ranges, on workers and inline', async (t) => {
  const { path, data } = fixture(t, 24 * 1024 * 1024 + 123)
  const { ranges, expected } = contiguousRanges(data, 20000, 7919, 200000)
  t.same(await hashRanges(path, ranges, { workers: 2 }), expected, '2 workers')
  t.same(await hashRanges(path, ranges, { workers: 1, bufferSize: 1 << 20 }), expected, '1 worker, 1 MiB reads')
  t.same(await hashRanges(path, ranges, { workers: 0 }), expected, 'inline')
})

t.test('callerHashes: this thread takes jobs too, with the same digests, and fewer workers', async (t) => {
  const { path, data } = fixture(t, 40 * 1024 * 1024 + 5)
  const { ranges, expected } = contiguousRanges(data, 16000, 104729, 300000)
  await endIdleHashWorkers()
  t.same(await hashRanges(path, ranges, { workers: 1, callerHashes: true, bufferSize: 1 << 20 }), expected, 'this thread + 1 worker')
  t.equal(idleHashWorkers(), 1, 'one worker started, parked again')
  await endIdleHashWorkers()
  t.same(await hashRanges(path, ranges, { workers: 0, callerHashes: true }), expected, 'this thread alone, no worker')
  t.equal(idleHashWorkers(), 0, 'no worker started')
  const progress: number[] = []
  t.same(await hashRanges(path, ranges, { callerHashes: true, onProgress: (n) => progress.push(n) }), expected, 'default workers')
  t.equal(progress.at(-1), data.length)
  // A range past the end, hashed on this thread: EBADSIZE as from a worker.
  await t.rejects(hashRanges(path, [{ offset: 0, size: data.length + 1 }], { workers: 0, callerHashes: true }), { code: 'EBADSIZE', message: /ends at/ })
  const ac = new AbortController()
  const p = hashRanges(path, ranges, { workers: 1, callerHashes: true, signal: ac.signal })
  ac.abort(new Error('stop'))
  await t.rejects(p, { message: 'stop' })
})

t.test('ranges in any order, with gaps, overlaps and empty ones come back in the given order', async (t) => {
  const { path, data } = fixture(t, 12 * 1024 * 1024)
  const ranges = [
    { offset: 10 * 1024 * 1024, size: 5000 },
    { offset: 0, size: 0 },
    { offset: 100, size: 9 * 1024 * 1024 },
    { offset: 200, size: 300 },
    { offset: 11 * 1024 * 1024, size: 1024 * 1024 },
  ]
  const expected = ranges.map((r) => sha(data.subarray(r.offset, r.offset + r.size)))
  t.same(await hashRanges(path, ranges, { workers: 2, bufferSize: 1 << 20 }), expected)
  t.same(await hashRanges(path, ranges, { workers: 0, bufferSize: 1 << 20 }), expected)
})

t.test('a whole-file hash equals sha256 of the file', async (t) => {
  const { path, data } = fixture(t, 9 * 1024 * 1024 + 7)
  t.equal(await hashFile(path, data.length), sha(data))
})

t.test('a range past the end of the file is EBADSIZE, not a short digest', async (t) => {
  const { path, data } = fixture(t, 9 * 1024 * 1024)
  await t.rejects(hashRanges(path, [{ offset: 0, size: data.length + 1 }], { workers: 1 }), { code: 'EBADSIZE' })
  await t.rejects(hashRanges(path, [{ offset: 0, size: data.length + 1 }], { workers: 0 }), { code: 'EBADSIZE' })
})

t.test('a missing file rejects with the errno named', async (t) => {
  const err = await hashRanges(join(t.testdir(), 'nope'), [{ offset: 0, size: 10 }], { workers: 1 }).catch((e: unknown) => e)
  t.match(err, { code: 'EHASHIO', context: { errno: 'ENOENT' } })
})

t.test('an abort stops the work and rejects with the reason', async (t) => {
  const { path, data } = fixture(t, 32 * 1024 * 1024)
  const ranges = Array.from({ length: 512 }, (_, i) => ({ offset: i * 65536, size: 65536 }))
  const ac = new AbortController()
  const p = hashRanges(path, ranges, { workers: 2, signal: ac.signal })
  ac.abort(new Error('stop now'))
  await t.rejects(p, { message: 'stop now' })
  await t.rejects(hashRanges(path, ranges, { signal: AbortSignal.abort(new Error('already')) }), { message: 'already' })
  t.equal(data.length, 32 * 1024 * 1024)
})

t.test('progress reports reach the total of range bytes', async (t) => {
  const { path } = fixture(t, 16 * 1024 * 1024)
  const ranges = Array.from({ length: 256 }, (_, i) => ({ offset: i * 65536, size: 65536 }))
  const seen: number[] = []
  await hashRanges(path, ranges, { workers: 2, onProgress: (n) => seen.push(n) })
  t.equal(seen.at(-1), 16 * 1024 * 1024)
  t.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]!), 'monotonic')
})

t.test('bad ranges and options are refused up front', async (t) => {
  await t.rejects(hashRanges('/dev/null', [{ offset: -1, size: 1 }]), RangeError)
  await t.rejects(hashRanges('/dev/null', [{ offset: 0, size: 1.5 }]), RangeError)
  await t.rejects(hashRanges('/dev/null', [], { workers: -1 }), RangeError)
  t.same(await hashRanges('/dev/null', []), [])
})

t.test('workers are kept between calls, prewarmed ones taken first, failed ones never reused', async (t) => {
  const { path, data } = fixture(t, 10 * 1024 * 1024)
  const ranges = Array.from({ length: 40 }, (_, i) => ({ offset: i * 256 * 1024, size: 256 * 1024 }))
  const expected = ranges.map((r) => sha(data.subarray(r.offset, r.offset + r.size)))
  await endIdleHashWorkers()
  t.equal(idleHashWorkers(), 0, 'none left by earlier tests')
  prewarmHashWorkers(2)
  prewarmHashWorkers(2)
  t.equal(idleHashWorkers(), 2, 'two parked; a second call adds none')
  t.same(await hashRanges(path, ranges, { workers: 2, bufferSize: 1 << 20 }), expected)
  t.equal(idleHashWorkers(), 2, 'the two prewarmed workers hashed and were parked again (new ones would make four)')
  t.same(await hashRanges(path, ranges, { workers: 2, bufferSize: 300 * 1024 }), expected, 'reused workers, a buffer holding one range and the head of the next')
  t.equal(idleHashWorkers(), 2)
  await t.rejects(hashRanges(path, [{ offset: 0, size: data.length + 1 }], { workers: 1 }), { code: 'EBADSIZE' })
  t.equal(idleHashWorkers(), 1, 'the worker of the failed call was ended, not parked')
  t.same(await hashRanges(path, ranges, { workers: 2 }), expected, 'the next call is right')
  await endIdleHashWorkers()
  t.equal(idleHashWorkers(), 0)
})
