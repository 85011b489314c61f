import t from 'tap'
import { closeSync, openSync, readdirSync, readSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import xxhash from 'xxhash-wasm'
import { endIdleHashWorkers, idleHashWorkers } from '../../agent/hash/pool.js'
import { prewarmXxh64Workers, xxh64Segments } from '../../agent/hash/segments.js'
import { XXH64_SEGMENT_BYTES } from '../../agent/hash/xxh64-format.js'
import { writeSparseImage } from '../helpers/image.js'

const SEG = XXH64_SEGMENT_BYTES

/** xxh64 of each 64 MiB slice of the file, the plain way: read the slice, xxhash-wasm h64Raw it. */
const independent = async (path: string, size: number): Promise<string[]> => {
  const { h64Raw } = await xxhash()
  const fd = openSync(path, 'r')
  const buf = Buffer.allocUnsafe(SEG)
  const out: string[] = []
  try {
    for (let off = 0; off < size; off += SEG) {
      const len = Math.min(SEG, size - off)
      let got = 0
      while (got < len) got += readSync(fd, buf, got, len - got, off + got)
      out.push(h64Raw(buf.subarray(0, len)).toString(16).padStart(16, '0'))
    }
  } finally {
    closeSync(fd)
  }
  return out
}

const openFds = () => readdirSync('/proc/self/fd').length

t.test('segment digests equal an independent xxh64 of each 64 MiB slice, on one thread and on several', async (t) => {
  const dir = t.testdir()
  const cases: [string, number, number][] = [
    // name, size, segments
    ['0 bytes', 0, 0],
    ['1 byte', 1, 1],
    ['exactly 64 MiB', SEG, 1],
    ['64 MiB + 1', SEG + 1, 2],
    ['3 segments and a tail', 3 * SEG + 12345, 4],
  ]
  for (const [name, size, segs] of cases) {
    const path = join(dir, name.replace(/\W+/g, '-'))
    if (size < 1024 * 1024) writeFileSync(path, Buffer.from('x'.repeat(size)))
    else await writeSparseImage(path, size, SEG, name)
    const want = await independent(path, size)
    t.equal(want.length, segs, `${name}: ${segs} segment(s)`)
    if (segs > 1) t.equal(new Set(want).size, segs, `${name}: the segments differ from each other (a meaningful fixture)`)
    for (const threads of [1, 2, 3]) {
      const got = await xxh64Segments(path, { threads })
      t.same(got.xxh64, want, `${name}, ${threads} thread(s)`)
      t.equal(got.size, size, `${name}: every byte read`)
      t.equal(got.threads, Math.max(1, Math.min(threads, segs)), `${name}: ${got.threads} thread(s) used (none started for one segment)`)
    }
    t.same((await xxh64Segments(path)).xxh64, want, `${name}, default threads`)
    // On workers only, so that a worker surely hashes several segments in a row.
    for (const threads of [1, 2]) {
      const got = await xxh64Segments(path, { threads, offThread: true })
      t.same(got.xxh64, want, `${name}, ${threads} worker(s) and not this thread`)
      t.equal(got.threads, Math.min(threads, segs), `${name}: ${got.threads} worker(s) used`)
    }
  }
})

t.test('one changed byte changes the digest of its segment only', async (t) => {
  const path = join(t.testdir(), 'img')
  const size = 3 * SEG + 999
  await writeSparseImage(path, size, SEG, 'flip')
  const before = (await xxh64Segments(path, { threads: 2 })).xxh64
  // The last byte of segment 0, the first of segment 2, the last of the file.
  for (const [at, seg] of [[SEG - 1, 0], [2 * SEG, 2], [size - 1, 3]] as const) {
    const fd = openSync(path, 'r+')
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, at)
    b[0] = b[0]! ^ 0x80
    writeSync(fd, b, 0, 1, at)
    closeSync(fd)
    const after = (await xxh64Segments(path, { threads: 2 })).xxh64
    t.same(after.flatMap((d, k) => (d === before[k] ? [] : [k])), [seg], `byte ${at}: segment ${seg}`)
    b[0] = b[0]! ^ 0x80
    const fd2 = openSync(path, 'r+')
    writeSync(fd2, b, 0, 1, at)
    closeSync(fd2)
  }
  t.same((await xxh64Segments(path)).xxh64, before, 'restored')
})

t.test('an abort between segments rejects with the reason, stops the workers and closes the file', async (t) => {
  const path = join(t.testdir(), 'img')
  await writeSparseImage(path, 6 * SEG, SEG, 'abort')
  const fds = openFds()
  const ac = new AbortController()
  const reason = new Error('stop hashing')
  const p = xxh64Segments(path, { threads: 2, signal: ac.signal })
  setImmediate(() => ac.abort(reason)) // runs at this thread's first yield, after its first segment
  await t.rejects(p, reason)
  t.equal(openFds(), fds, 'no file descriptor left open')
  const pre = new AbortController()
  pre.abort(reason)
  await t.rejects(xxh64Segments(path, { signal: pre.signal }), reason, 'an already aborted signal reads nothing')
  const off = new AbortController()
  const q = xxh64Segments(path, { threads: 1, offThread: true, signal: off.signal })
  setTimeout(() => off.abort(reason), 5)
  await t.rejects(q, reason, 'on workers only, too')
  t.equal(openFds(), fds, 'no file descriptor left open')
  t.equal((await xxh64Segments(path, { threads: 2 })).xxh64.length, 6, 'and the next run works')
})

t.test('workers wait between hashes and the next one reuses them', async (t) => {
  const path = join(t.testdir(), 'img')
  await writeSparseImage(path, 4 * SEG, SEG, 'pool')
  const want = await independent(path, 4 * SEG)
  await endIdleHashWorkers()
  t.equal(idleHashWorkers(), 0, 'none left by earlier tests')
  const r = await xxh64Segments(path, { threads: 3 })
  t.same(r.xxh64, want)
  t.equal(r.threads, 3)
  t.equal(idleHashWorkers(), 2, 'its two workers wait for the next hash')
  const again = await xxh64Segments(path, { threads: 3 })
  t.same(again.xxh64, want, 'reused workers hash their second job right')
  t.equal(idleHashWorkers(), 2, 'the same two are waiting again (new ones would make four)')
  const off = await xxh64Segments(path, { threads: 3, offThread: true })
  t.same(off.xxh64, want)
  t.equal(idleHashWorkers(), 3)
  await endIdleHashWorkers()
  t.equal(idleHashWorkers(), 0)
})

t.test('prewarmed segment workers are taken by the next digest instead of starting new ones', async (t) => {
  await endIdleHashWorkers()
  await prewarmXxh64Workers(2)
  t.equal(idleHashWorkers(), 2, 'two workers parked, idle')
  await prewarmXxh64Workers(2)
  t.equal(idleHashWorkers(), 2, 'a second call adds none (up to count in all)')
  const path = join(t.testdir(), 'three-segments')
  closeSync(openSync(path, 'w'))
  truncateSync(path, 2 * XXH64_SEGMENT_BYTES + 5)
  const r = await xxh64Segments(path, { threads: 3 })
  t.equal(r.threads, 3, 'this thread and the two prewarmed workers hashed')
  t.equal(idleHashWorkers(), 2, 'and both were parked again: none was started for the digest')
  await endIdleHashWorkers()
  t.equal(idleHashWorkers(), 0)
})
