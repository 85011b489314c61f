import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildManifest } from '../../agent/manifest/build.js'
import { chunkSizes, chunkingForAverage } from '../../agent/manifest/cdc.js'
import { parseManifest } from '../../agent/manifest/schema.js'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { gate } from '../helpers/capability.js'
import xxhash from 'xxhash-wasm'

const seeded = (seed: string, bytes: number): Buffer => {
  const out = Buffer.allocUnsafe(bytes)
  for (let i = 0, k = 0; i < bytes; i += 32, k++) createHash('sha256').update(`${seed}/${k}`).digest().copy(out, i)
  return out
}

const write = (t: Test, data: Uint8Array, name = 'image.raw'): string => {
  const p = join(t.testdir(), name)
  writeFileSync(p, data)
  return p
}

const now = (): Date => new Date('2026-11-21T12:00:00.000Z')

t.test('a large image: whole digest equals sha256sum, every chunk digest and cut is right', async (t) => {
  const data = seeded('build', 20 * 1024 * 1024 + 4321)
  const path = write(t, data)
  const m = await buildManifest(path, { name: 'big', urls: ['http://head.example/big.raw'], now })
  t.equal(m.sha256, execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0], 'sha256sum agrees')
  t.equal(m.size, data.length)
  t.same(m.chunks.map((c) => c.size), chunkSizes(data), 'cuts equal the chunker on the whole buffer')
  const bad = m.chunks.filter((c) => c.sha256 !== createHash('sha256').update(data.subarray(c.offset, c.offset + c.size)).digest('hex'))
  t.equal(bad.length, 0, 'every chunk digest matches its bytes')
  t.equal(m.format, 'raw')
  t.equal(m.created, '2026-11-21T12:00:00.000Z')
  t.same(m.chunking, { algorithm: 'fastcdc-gear-v1', minSize: 16384, avgSize: 65536, maxSize: 262144 })
})

t.test('xxh64Segments: the xxh64 of each 64 MiB segment, as an independent hash of each slice says; left out on request', async (t) => {
  const SEG = 64 * 1024 * 1024
  const data = Buffer.alloc(SEG + 3 * 1024 * 1024) // two segments, the second short; mostly zeros (cheap), marked so they differ
  seeded('seg-a', 4096).copy(data, 100)
  seeded('seg-b', 4096).copy(data, SEG + 100)
  const path = write(t, data)
  const { h64Raw } = await xxhash()
  const want = [data.subarray(0, SEG), data.subarray(SEG)].map((b) => h64Raw(b, 0n).toString(16).padStart(16, '0'))
  for (const workers of [0, 2]) {
    const m = await buildManifest(path, { name: 'seg', urls: ['seg.raw'], now, workers })
    t.same(m.xxh64Segments, want, `workers ${workers}`)
  }
  t.equal((await buildManifest(path, { name: 'seg', urls: ['seg.raw'], now, xxh64Segments: false })).xxh64Segments, undefined, 'xxh64Segments: false')
})

t.test('the worker path and the single-thread path give the same manifest', async (t) => {
  const path = write(t, seeded('paths', 10 * 1024 * 1024 + 1))
  const a = await buildManifest(path, { name: 'x', urls: ['x.raw'], now, workers: 2 })
  const b = await buildManifest(path, { name: 'x', urls: ['x.raw'], now, workers: 0 })
  t.equal(serializeManifest(a), serializeManifest(b))
})

t.test('a small image is one pass and still exact; its manifest parses back', async (t) => {
  const data = seeded('small', 300 * 1024 + 17)
  const path = write(t, data)
  const m = await buildManifest(path, { name: 'small', urls: ['small.raw'], now, chunking: chunkingForAverage(4096) })
  t.equal(m.sha256, createHash('sha256').update(data).digest('hex'))
  t.same(m.chunks.map((c) => c.size), chunkSizes(data, chunkingForAverage(4096)))
  t.same(parseManifest(serializeManifest(m)), m)
})

t.test('a rebuilt image with a small change shares almost all chunks', async (t) => {
  const v1 = seeded('delta', 12 * 1024 * 1024)
  const v2 = Buffer.concat([v1.subarray(0, 5_000_000), Buffer.from('a few new bytes'), v1.subarray(5_000_100)])
  const m1 = await buildManifest(write(t, v1, 'v1'), { name: 'v', urls: ['v'], now })
  const m2 = await buildManifest(write(t, v2, 'v2'), { name: 'v', urls: ['v'], now })
  const have = new Set(m1.chunks.map((c) => c.sha256))
  const missing = m2.chunks.filter((c) => !have.has(c.sha256))
  const bytes = missing.reduce((s, c) => s + c.size, 0)
  t.ok(missing.length <= 3, `${missing.length} of ${m2.chunks.length} chunks new`)
  t.ok(bytes / v2.length < 0.05, `${bytes} new bytes (${((100 * bytes) / v2.length).toFixed(2)} %)`)
})

t.test('a real squashfs image is detected as such', gate('squashfs-tools'), async (t) => {
  const dir = t.testdir({ tree: { 'a.txt': 'hello\n', sub: { 'b.bin': seeded('sq', 200000).toString('base64') } } })
  const img = join(dir, 'img.sqfs')
  execFileSync('mksquashfs', [join(dir, 'tree'), img, '-noappend', '-quiet', '-mkfs-time', '0', '-all-time', '0'], { stdio: 'ignore' })
  const m = await buildManifest(img, { name: 'sq', urls: ['img.sqfs'], now })
  t.equal(m.format, 'squashfs')
  t.equal(m.sha256, execFileSync('sha256sum', [img], { encoding: 'utf8' }).split(' ')[0])
})

t.test('an empty image or a directory is refused', async (t) => {
  await t.rejects(buildManifest(write(t, Buffer.alloc(0)), { name: 'e', urls: ['e'] }), { code: 'ECONFIG', message: /empty/ })
  const d = join(t.testdir(), 'd')
  mkdirSync(d)
  await t.rejects(buildManifest(d, { name: 'e', urls: ['e'] }), { code: 'ECONFIG', message: /not a regular file/ })
})

t.test('a bad name or URL is refused before anything is emitted', async (t) => {
  const path = write(t, seeded('names', 5000))
  await t.rejects(buildManifest(path, { name: '../etc', urls: ['x'] }), { code: 'EMANIFEST', field: '$.name' })
  await t.rejects(buildManifest(path, { name: 'ok', urls: ['file:///x'] }), { code: 'EMANIFEST', field: '$.urls[0]' })
  await t.rejects(buildManifest(path, { name: 'ok', urls: [] }), { code: 'EMANIFEST', field: '$.urls' })
})

t.test('an abort stops the build', async (t) => {
  const path = write(t, seeded('abort', 16 * 1024 * 1024))
  const ac = new AbortController()
  const p = buildManifest(path, { name: 'a', urls: ['a'], signal: ac.signal })
  ac.abort(new Error('enough'))
  await t.rejects(p, { message: 'enough' })
})

t.test('progress is reported up to the image size', async (t) => {
  const path = write(t, seeded('progress', 12 * 1024 * 1024))
  const seen: string[] = []
  await buildManifest(path, { name: 'p', urls: ['p'], onProgress: (p) => seen.push(`${p.phase}:${p.bytesDone}/${p.bytesTotal}`) })
  t.ok(seen.includes(`cut:${12 * 1024 * 1024}/${12 * 1024 * 1024}`))
  t.ok(seen.includes(`hash:${12 * 1024 * 1024}/${12 * 1024 * 1024}`))
})
