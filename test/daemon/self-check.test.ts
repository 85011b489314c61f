import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { open as openFile, writeFile } from 'node:fs/promises'
import { Cache } from '../../agent/cache/store.js'
import { SelfChecker, MAX_QUEUED_CHECKS, type SelfCheckResult } from '../../agent/daemon/self-check.js'
import type { ObjectRef } from '../../agent/daemon/correlate.js'
import { publishBytes } from '../helpers/cache.js'

/** A real cache holding one published image (chunked, named). */
const cached = async (t: Test, size = 600_000): Promise<{ cache: Cache; ref: ObjectRef; chunks: { index: number; offset: number; size: number; sha256: string }[] }> => {
  const dir = t.testdir()
  const cache = await Cache.open(dir)
  const { m, path } = await publishBytes(cache, randomBytes(size), { name: 'CPE-base' })
  return { cache, ref: { sha256: m.sha256, path, cacheDir: dir }, chunks: m.chunks }
}

/** Flips bytes inside the chunk, in place (as a failing disk would). */
const corrupt = async (path: string, offset: number): Promise<void> => {
  const fh = await openFile(path, 'r+')
  try {
    await fh.write(Buffer.from('CORRUPTED'), 0, 9, offset)
  } finally {
    await fh.close()
  }
}

const checker = (opts: { now?: () => number; minIntervalMs?: number } = {}) => {
  const results: SelfCheckResult[] = []
  const c = new SelfChecker({ onResult: (r) => void results.push(r), ...opts })
  return { c, results }
}

t.test('a clean object is reported ok, with its chunks counted and its name', async (t) => {
  const { ref, chunks } = await cached(t)
  const { c, results } = checker()
  t.equal(c.request(ref), true)
  await c.idle()
  t.match(results, [{ object: ref, ok: true, bad: [], corruptChunks: [], chunksChecked: chunks.length, name: 'CPE-base' }])
  t.equal(results[0]?.error, undefined)
})

t.test('bytes changed on disk: exactly the damaged chunks are found and marked corrupt in the cache', async (t) => {
  const { cache, ref, chunks } = await cached(t)
  const target = chunks[2]!
  await corrupt(ref.path, target.offset + 10)
  const { c, results } = checker()
  c.request(ref)
  await c.idle()
  const r = results[0]!
  t.equal(r.ok, false)
  t.same(r.bad, [{ index: target.index, offset: target.offset, size: target.size, expected: target.sha256 }])
  t.same(r.corruptChunks, [target.index])
  t.same((await cache.readMeta(ref.sha256))?.corruptChunks, [target.index], 'the mark is in the meta, for the next fetch to repair')
})

t.test('an object asked for again within the window is checked once; after the window, again', async (t) => {
  const { ref } = await cached(t, 100_000)
  let now = 1_000_000
  const { c, results } = checker({ now: () => now, minIntervalMs: 60_000 })
  t.equal(c.request(ref), true)
  t.equal(c.request(ref), false, 'a flood of errors asks many times; one check answers')
  await c.idle()
  now += 59_999
  t.equal(c.request(ref), false)
  now += 2
  t.equal(c.request(ref), true)
  await c.idle()
  t.equal(results.length, 2)
})

t.test('the queue is bounded: requests past it are refused', async (t) => {
  const dir = t.testdir()
  const { c } = checker()
  // Objects that do not exist: each check fails fast, but the first is still running when the rest are asked.
  const refs = Array.from({ length: MAX_QUEUED_CHECKS + 5 }, (_, i) => ({ sha256: i.toString(16).padStart(64, '0'), path: `${dir}/x${i}`, cacheDir: dir }))
  const accepted = refs.map((r) => c.request(r)).filter(Boolean).length
  t.equal(accepted, MAX_QUEUED_CHECKS + 1, 'the one being checked, and a full queue behind it')
  await c.idle()
})

t.test('a missing object is not ok, with the cache\'s reason; one whose cache cannot be opened carries the error; the checker goes on', async (t) => {
  const { ref } = await cached(t, 100_000)
  const notADir = `${ref.cacheDir}/not-a-dir`
  await writeFile(notADir, 'x')
  const { c, results } = checker()
  const missing = { ...ref, sha256: 'e'.repeat(64) }
  const unopenable = { sha256: 'd'.repeat(64), path: notADir + '/o', cacheDir: notADir }
  c.request(missing)
  c.request(unopenable)
  c.request(ref)
  await c.idle()
  t.equal(results.length, 3)
  t.match(results[0], { object: missing, ok: false, reason: 'missing', bad: [] })
  t.equal(results[0]?.error, undefined)
  t.match(results[1], { object: unopenable, ok: false, chunksChecked: 0, error: /\S/ })
  t.equal(results[2]?.ok, true, 'the next object was still checked')
})

t.test('after abort, queued checks are dropped without results', async (t) => {
  const { ref } = await cached(t, 100_000)
  const ac = new AbortController()
  const results: SelfCheckResult[] = []
  const c = new SelfChecker({ onResult: (r) => void results.push(r), signal: ac.signal })
  ac.abort()
  c.request(ref)
  await c.idle()
  t.same(results, [])
})
