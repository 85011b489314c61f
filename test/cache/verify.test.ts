/**
 * Verification returns a verdict and writes nothing (agent/cache/verify.ts):
 * what it finds wrong in the metadata is recorded by the caller that wants
 * it recorded (Cache.recordVerdict; lookup does). On a real cache directory.
 */
import t, { type Test } from 'tap'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { verifyObject } from '../../agent/cache/verify.js'
import { publishBytes } from '../helpers/cache.js'
import { flipByte, seededBytes } from '../helpers/image.js'
import { forgeCachedObject } from '../helpers/forge.js'

const KiB = 1024

const put = async (t: Test, seed: string) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  return { cache, ...(await publishBytes(cache, seededBytes(200 * KiB, seed), { name: seed })) }
}

/** Every file under the cache with its bytes and mtime: what "wrote nothing" is checked against. */
const snapshot = async (dir: string): Promise<Record<string, string>> => {
  const out: Record<string, string> = {}
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue
    const p = join(e.parentPath, e.name)
    const st = await stat(p)
    out[p] = `${st.mtimeMs}:${(await readFile(p)).toString('base64')}`
  }
  return out
}

t.test('a wrong recorded xxh64 with good bytes: the verdict is ok and says so, and verify writes nothing', async (t) => {
  const { cache, m, path, xxh64 } = await put(t, 'stale')
  const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  await writeFile(path + '.meta.json', JSON.stringify({ ...meta, xxh64: ['0123456789abcdef'] }))
  const before = await snapshot(cache.dir)
  for (const v of [await cache.verify(m.sha256), await verifyObject(cache, m.sha256)]) {
    t.equal(v.ok, true, 'the bytes are good')
    t.equal(v.staleXxh64, '0', 'segment 0 is named as recorded wrong')
    t.same(v.meta?.xxh64, xxh64, 'the verdict carries the digest of the bytes')
  }
  t.same(await snapshot(cache.dir), before, 'not one file written or touched')
  t.same(cache.problems, [], 'nothing reported as rewritten')
})

t.test('recordVerdict writes the corrected digest (and reports it); other verdicts record nothing', async (t) => {
  const { cache, m, path, xxh64 } = await put(t, 'record')
  const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  await writeFile(path + '.meta.json', JSON.stringify({ ...meta, xxh64: ['0123456789abcdef'] }))
  await cache.recordVerdict(m.sha256, await cache.verify(m.sha256))
  t.same((await cache.readMeta(m.sha256))?.xxh64, xxh64, 'the digest of the bytes is recorded')
  t.ok(cache.problems.some((p) => /recorded xxh64 of segment\(s\) 0 is wrong/.test(p.problem)), 'reported')
  const before = await snapshot(cache.dir)
  await cache.recordVerdict(m.sha256, await cache.verify(m.sha256))
  t.same(await snapshot(cache.dir), before, 'a clean verdict records nothing')
})

t.test('corrupt bytes: verify names the chunk and writes nothing; lookup records it as corrupt', async (t) => {
  const { cache, m, path } = await put(t, 'corrupt')
  const last = m.chunks.at(-1)!
  await flipByte(path, last.offset)
  const before = await snapshot(cache.dir)
  for (const mode of ['fast', 'strong'] as const) {
    const v = await cache.verify(m.sha256, { mode })
    t.equal(v.ok, false, mode)
    t.same(v.badChunks, [last.index], `${mode}: the flipped chunk`)
  }
  t.same(await snapshot(cache.dir), before, 'verify wrote nothing: no corruptChunks')
  const r = await cache.lookup(m.sha256)
  t.equal(r.status, 'corrupt')
  t.same((await cache.readMeta(m.sha256))?.corruptChunks, [last.index], 'lookup recorded the bad chunk')
})

t.test('a missing object, a foreign thing and missing metadata are verdicts, not writes', async (t) => {
  const { cache, m, path } = await put(t, 'odd')
  t.match(await cache.verify('0'.repeat(64)), { ok: false, reason: 'missing', badChunks: [] })
  await writeFile(path + '.meta.json', 'not json')
  const before = await snapshot(cache.dir)
  const v = await cache.verify(m.sha256)
  t.equal(v.ok, false)
  t.match(v.reason, /metadata missing or malformed; no chunk list/)
  const withChunks = await cache.verify(m.sha256, { published: { size: m.size, chunks: m.chunks } })
  t.match(withChunks, { ok: false, badChunks: [], reason: /metadata missing or malformed/ }, 'the manifest\'s chunks say the bytes are good, the verdict stays not ok')
  t.same(await snapshot(cache.dir), before, 'nothing written')
})

t.test('with the published digests, they are the only reference: forged metadata cannot make forged bytes pass', async (t) => {
  const { cache, m, path, xxh64 } = await put(t, 'forged')
  const published = { size: m.size, chunks: m.chunks, xxh64Segments: xxh64 }
  t.match(await cache.verify(m.sha256, { published }), { ok: true, verifiedBy: 'manifest-xxh64' }, 'the genuine object: a fast pass against the manifest')
  await forgeCachedObject(path, { at: 100 * KiB })
  t.match(await cache.verify(m.sha256), { ok: true, verifiedBy: 'metadata-xxh64' }, 'against its own metadata the forgery passes (corruption, not tampering)')
  t.match(await cache.verify(m.sha256, { mode: 'strong' }), { ok: true, verifiedBy: 'metadata-sha256' }, 'strong against the metadata too')
  const bad = m.chunks.filter((c) => c.offset < 104 * KiB && 100 * KiB < c.offset + c.size).map((c) => c.index)
  for (const mode of ['fast', 'strong'] as const) {
    t.match(await cache.verify(m.sha256, { mode, published }), { ok: false, badChunks: bad }, `${mode} against the manifest: refused, the forged chunk(s) named`)
  }
  const { xxh64Segments: _none, ...older } = published
  t.match(await cache.verify(m.sha256, { published: older }), { ok: false, badChunks: bad }, 'a manifest without segments: fast is done as strong, against its chunks')
})

t.test("a manifest whose segment xxh64 contradicts its own chunks: the chunks' sha256 decide, and the verdict says so", async (t) => {
  const { cache, m } = await put(t, 'contradiction')
  const v = await cache.verify(m.sha256, { published: { size: m.size, chunks: m.chunks, xxh64Segments: ['0123456789abcdef'] } })
  t.match(v, { ok: true, verifiedBy: 'manifest-sha256', reason: /disagrees with its chunks' sha256/ })
  t.equal(v.staleXxh64, undefined, 'nothing local to rewrite')
})
