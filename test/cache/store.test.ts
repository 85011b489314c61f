import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { chmod, lstat, mkdir, readdir, readFile, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import xxhash from 'xxhash-wasm'
import { hashRangesInline, type RangeHasher } from '../../agent/hash/file.js'
import { xxh64Segments } from '../../agent/hash/segments.js'
import { XXH64_SEGMENT_BYTES } from '../../agent/cache/meta.js'
import { IntegrityError, SizeError } from '../../agent/core/errors.js'
import type { Chunk } from '../../agent/manifest/types.js'
import { flipByte, manifestFor, seededBytes, sha256Hex, writeSparseImage } from '../helpers/image.js'

const KiB = 1024

/** Publishes `data` through the real path: temp file in tmp/, then publish. */
const put = async (cache: Cache, data: Buffer, name = 'img', lastUsed?: Date) => {
  const m = manifestFor(data, [], { name })
  const from = join(cache.tmpDir, `${m.sha256}.part`)
  await writeFile(from, data)
  const { xxh64 } = await xxh64Segments(from)
  const path = await cache.publish({ from, sha256: m.sha256, computedSha256: m.sha256, size: data.length, xxh64, chunks: m.chunks, name })
  if (lastUsed) {
    const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
    await writeFile(path + '.meta.json', JSON.stringify({ ...meta, lastUsedAt: lastUsed.toISOString() }))
  }
  return { m, path }
}

const flip = (path: string, at: number) => flipByte(path, at)

const newCache = async (t: Test) => Cache.open(join(t.testdir(), 'cache'))

t.test('a published object is found, re-verified and root-only', async (t) => {
  const cache = await newCache(t)
  const data = seededBytes(300 * KiB, 'a')
  const { m, path } = await put(cache, data)
  t.equal(path, cache.objectPath(m.sha256))
  t.equal((await stat(path)).mode & 0o777, 0o600)
  t.equal((await stat(join(cache.dir, 'objects'))).mode & 0o777, 0o700)
  t.equal((await stat(cache.tmpDir)).mode & 0o777, 0o700)
  for (const verify of ['fast', 'strong'] as const) {
    const r = await cache.lookup(m.sha256, { verify, name: 'other-name' })
    t.equal(r.status, 'hit', verify)
  }
  const meta = await cache.readMeta(m.sha256)
  t.same(meta?.names, ['img', 'other-name'], 'names seen are recorded')
})

t.test('mustExist: a missing directory is ENOCACHE and is not created; an existing empty one opens', async (t) => {
  const missing = join(t.testdir(), 'typo')
  await t.rejects(Cache.open(missing, { mustExist: true }), { code: 'ENOCACHE', message: new RegExp(`no cache at ${missing}`) })
  await t.rejects(lstat(missing), { code: 'ENOENT' })
  const empty = join(t.testdir(), 'fresh-partition')
  await mkdir(empty)
  const cache = await Cache.open(empty, { mustExist: true })
  t.same((await cache.list()).objects, [])
  t.same(await readdir(empty), [], 'read as it is: nothing made (#22 finding 5)')
})

t.test('open never takes over a directory that is not a cache: a reader changes nothing, a writer refuses foreign or shared ones', async (t) => {
  const dir = join(t.testdir(), 'someones')
  await mkdir(dir)
  await writeFile(join(dir, 'notes.txt'), 'mine')
  await chmod(dir, 0o755)
  await t.rejects(Cache.open(dir, { mustExist: true }), { code: 'ENOCACHE', message: `no cache at ${dir}: it is not a boot-agent cache (no objects/ directory, and it holds 1 other entry: notes.txt); nothing was changed (check the path)` })
  await t.rejects(Cache.open(dir), { code: 'ECACHE', message: new RegExp(`^${dir} is not a boot-agent cache .*\\(it holds 1 other entry: notes.txt\\): refusing to make it one`) })
  t.same(await readdir(dir), ['notes.txt'])
  t.equal((await stat(dir)).mode & 0o7777, 0o755, 'mode unchanged')

  const shared = join(t.testdir(), 'shared')
  await mkdir(shared)
  await chmod(shared, 0o1777)
  await t.rejects(Cache.open(shared), { code: 'ECACHE', message: /is a shared directory \(mode 1777\)/ })
  t.equal((await stat(shared)).mode & 0o7777, 0o1777, 'a shared directory keeps its mode')
  t.same(await readdir(shared), [])

  // A freshly made filesystem (lost+found only, 0755) is the boot stage's own: it becomes the cache.
  const fresh = join(t.testdir(), 'fresh-fs')
  await mkdir(join(fresh, 'lost+found'), { recursive: true })
  await chmod(fresh, 0o755)
  await Cache.open(fresh)
  t.equal((await stat(fresh)).mode & 0o7777, 0o700)
  t.same((await readdir(fresh)).sort(), ['lost+found', 'objects', 'tmp'])
  // A cache opened by a reader is left as it is, a loosened mode included.
  await chmod(fresh, 0o755)
  await rm(join(fresh, 'tmp'), { recursive: true })
  await Cache.open(fresh, { mustExist: true })
  t.equal((await stat(fresh)).mode & 0o7777, 0o755, 'a reader changes no mode')
  t.same((await readdir(fresh)).sort(), ['lost+found', 'objects'], 'and makes nothing')
})

t.test('reopening a cache keeps it private: a loosened mode is tightened, a symlinked directory refused', async (t) => {
  const cache = await newCache(t)
  const data = seededBytes(100 * KiB, 'reopen')
  const { m } = await put(cache, data)
  const again = await Cache.open(cache.dir)
  t.equal((await again.lookup(m.sha256)).status, 'hit', 'an existing cache opens as it is')
  await chmod(cache.tmpDir, 0o755)
  await chmod(cache.dir, 0o777)
  await Cache.open(cache.dir)
  t.equal((await stat(cache.tmpDir)).mode & 0o777, 0o700, 'tmp/ is 0700 again')
  t.equal((await stat(cache.dir)).mode & 0o777, 0o700, 'the cache directory is 0700 again')
  const elsewhere = join(cache.dir, '..', 'elsewhere')
  await mkdir(elsewhere, { mode: 0o700 })
  await rm(cache.tmpDir, { recursive: true })
  await symlink(elsewhere, cache.tmpDir)
  await t.rejects(Cache.open(cache.dir), { code: 'ECACHE', message: /tmp.* is not a directory \(symlinks are not followed\)/ })
})

t.test('publish refuses bytes whose digest or size is not the pinned one, and publishes nothing', async (t) => {
  const cache = await newCache(t)
  const data = seededBytes(100 * KiB, 'b')
  const m = manifestFor(data, [])
  const from = join(cache.tmpDir, 'x.part')
  await writeFile(from, data)
  await t.rejects(cache.publish({ from, sha256: m.sha256, computedSha256: 'f'.repeat(64), size: data.length, xxh64: ['0'.repeat(16)], chunks: m.chunks }), IntegrityError)
  await t.rejects(cache.publish({ from, sha256: m.sha256, computedSha256: m.sha256, size: data.length + 1, xxh64: ['0'.repeat(16)], chunks: m.chunks }), SizeError)
  t.equal((await cache.lookup(m.sha256)).status, 'miss')
})

t.test('a flipped byte fails fast verification and the bad chunk is located and recorded', async (t) => {
  const cache = await newCache(t)
  const data = seededBytes(600 * KiB, 'c')
  const { m, path } = await put(cache, data)
  const at = 400 * KiB + 5
  await flip(path, at)
  const bad = m.chunks.find((c) => c.offset <= at && at < c.offset + c.size)!.index
  const r = await cache.lookup(m.sha256)
  t.equal(r.status, 'corrupt')
  t.same(r.status === 'corrupt' && r.badChunks, [bad])
  t.same((await cache.readMeta(m.sha256))?.corruptChunks, [bad], 'recorded in the metadata')
  const strong = await cache.verify(m.sha256, { mode: 'strong' })
  t.same(strong.badChunks, [bad], 'strong verification finds the same chunk')
})

t.test('a truncated object is detected with its missing tail chunks', async (t) => {
  const cache = await newCache(t)
  const data = seededBytes(500 * KiB, 'd')
  const { m, path } = await put(cache, data)
  await truncate(path, 200 * KiB)
  const v = await cache.verify(m.sha256)
  t.equal(v.ok, false)
  t.match(v.reason, /size/)
  const expected = m.chunks.filter((c) => c.offset + c.size > 200 * KiB).map((c) => c.index)
  t.same(v.badChunks, expected)
})

t.test('symlinks, foreign files and malformed metadata are reported and never followed', async (t) => {
  const dir = t.testdir({ outside: { 'secret.bin': 'not an image' } })
  const cache = await Cache.open(join(dir, 'cache'))
  const good = await put(cache, seededBytes(50 * KiB, 'e'))
  // A symlink posing as an object, pointing outside the cache.
  const fakeSha = 'ab'.padEnd(64, '0')
  await mkdir(join(cache.dir, 'objects', 'sha256', 'ab'), { recursive: true })
  await symlink(join(dir, 'outside', 'secret.bin'), cache.objectPath(fakeSha))
  await writeFile(cache.metaPath(fakeSha), '{"schema":1}')
  // A foreign file, a symlinked shard, an object with malformed metadata.
  await writeFile(join(cache.dir, 'objects', 'sha256', 'ab', 'README'), 'hello')
  await symlink(join(dir, 'outside'), join(cache.dir, 'objects', 'sha256', 'cd'))
  const badMeta = await put(cache, seededBytes(40 * KiB, 'f'))
  await writeFile(badMeta.path + '.meta.json', '{"schema":1,"size":"big"}')
  const { objects, problems } = await cache.list()
  t.same(objects.map((o) => o.sha256), [good.m.sha256], 'only the well-formed object is listed')
  const text = problems.map((p) => `${p.path}: ${p.problem}`).join('\n')
  t.match(text, /ab\/0+: object is a symlink/)
  t.match(text, /README: foreign file/)
  t.match(text, /sha256\/cd: symlink in objects/)
  t.match(text, /object with malformed metadata/)
  const look = await cache.lookup(fakeSha)
  t.equal(look.status, 'corrupt', 'a symlinked object is not a hit')
  t.equal(await readFile(join(dir, 'outside', 'secret.bin'), 'utf8'), 'not an image', 'its target is untouched')
  // Publishing a real object where a symlink sits replaces the link, not its target.
  const data = seededBytes(10 * KiB, 'g')
  const m = manifestFor(data, [])
  await mkdir(join(cache.objectPath(m.sha256), '..'), { recursive: true })
  await symlink(join(dir, 'outside', 'secret.bin'), cache.objectPath(m.sha256))
  t.equal((await cache.lookup(m.sha256)).status, 'corrupt')
  const { path } = await put(cache, data)
  t.equal((await lstat(path)).isFile(), true, 'now a regular file')
  t.same(await readFile(path), data)
  t.equal(await readFile(join(dir, 'outside', 'secret.bin'), 'utf8'), 'not an image', 'the link target was never written')
})

t.test('eviction removes least recently used objects first and never a pinned one', async (t) => {
  const cache = await newCache(t)
  const a = await put(cache, seededBytes(100 * KiB, 'old'), 'old', new Date('2026-01-01'))
  const b = await put(cache, seededBytes(100 * KiB, 'mid'), 'mid', new Date('2026-02-01'))
  const c = await put(cache, seededBytes(100 * KiB, 'new'), 'new', new Date('2026-03-01'))
  const removed = await cache.evict({ keep: 1, pinned: [a.m.sha256] })
  t.same(removed.map((o) => o.sha256), [b.m.sha256, c.m.sha256].slice(0, 2), 'the unpinned ones, oldest first')
  const left = (await cache.list()).objects.map((o) => o.sha256)
  t.same(left, [a.m.sha256], 'the pinned object stays even though it is the oldest')
  t.same(await cache.evict({ needBytes: 10 ** 9, pinned: [a.m.sha256] }), [], 'nothing evictable left')
})

t.test('a lock held by a live process makes another wait; a dead owner\'s lock is taken over', async (t) => {
  const cache = await newCache(t)
  const sha = 'e'.repeat(64)
  const l1 = await cache.lock(sha)
  await t.rejects(cache.lock(sha, { timeoutMs: 200 }), { code: 'ELOCKED' })
  await l1.release()
  const l2 = await cache.lock(sha, { timeoutMs: 200 })
  await l2.release()
  // A lock left by a process that died (kill -9): its pid is not alive.
  const child = spawn(process.execPath, ['-e', ''])
  const deadPid = await new Promise<number>((r) => child.on('exit', () => r(child.pid!)))
  const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()
  await writeFile(join(cache.tmpDir, `${sha}.lock`), `${deadPid}\n${bootId}\n`)
  const l3 = await cache.lock(sha, { timeoutMs: 200 })
  t.equal((await readFile(l3.path, 'utf8')).split('\n')[0], String(process.pid), 'taken over')
  await l3.release()
  // A lock from an earlier boot (the cache outlives reboots), even with a live pid.
  await writeFile(join(cache.tmpDir, `${sha}.lock`), `1\nsome-other-boot\n`)
  const l4 = await cache.lock(sha, { timeoutMs: 200 })
  await l4.release()
})

t.test('a wrong recorded xxh64 with every chunk intact is rewritten, not treated as corruption', async (t) => {
  const cache = await newCache(t)
  const { m, path } = await put(cache, seededBytes(100 * KiB, 'h'))
  const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  await writeFile(path + '.meta.json', JSON.stringify({ ...meta, xxh64: ['0123456789abcdef'] }))
  t.equal((await cache.lookup(m.sha256)).status, 'hit')
  t.same((await cache.readMeta(m.sha256))?.xxh64, meta.xxh64, 'the digest of the bytes is back')
  t.ok(cache.problems.some((p) => /recorded xxh64/.test(p.problem)), 'reported')
})

// ---- the fast digest: xxh64 per 64 MiB segment --------------------------------

const SEG = XXH64_SEGMENT_BYTES

/** Publishes a large sparse image (writeSparseImage) with fixed chunks of `chunkBytes` (they straddle segment boundaries). */
const putLarge = async (cache: Cache, size: number, chunkBytes: number, seed: string) => {
  const from = join(cache.tmpDir, `${seed}.part`)
  await writeSparseImage(from, size, SEG, seed)
  const data = await readFile(from)
  const chunks: Chunk[] = []
  for (let off = 0; off < size; off += chunkBytes) {
    const part = data.subarray(off, Math.min(size, off + chunkBytes))
    chunks.push({ index: chunks.length, offset: off, size: part.length, sha256: sha256Hex(part) })
  }
  const sha = sha256Hex(data)
  const { xxh64 } = await xxh64Segments(from)
  const path = await cache.publish({ from, sha256: sha, computedSha256: sha, size, xxh64, chunks })
  return { sha, path, chunks, xxh64 }
}

/** A cache whose sha256 range hasher records every range it is asked about. */
const recordingCache = async (t: Test) => {
  const asked: { offset: number; size: number }[][] = []
  const hasher: RangeHasher = (path, ranges, opts) => {
    asked.push(ranges.map((r) => ({ offset: r.offset, size: r.size })))
    return hashRangesInline(path, ranges, opts)
  }
  return { cache: await Cache.open(join(t.testdir(), 'cache'), { hasher }), asked }
}

t.test('the metadata records the xxh64 of each 64 MiB segment, as an independent hash of each slice says', async (t) => {
  const cache = await newCache(t)
  const { h64Raw } = await xxhash()
  for (const size of [0, SEG, SEG + 1, 2 * SEG + 5]) {
    const { sha, path, chunks } = await putLarge(cache, size, 3 * 1024 * 1024 + 7, `sizes-${size}`)
    const meta = await cache.readMeta(sha)
    const data = await readFile(path)
    const want: string[] = []
    for (let off = 0; off < size; off += SEG) want.push(h64Raw(data.subarray(off, Math.min(size, off + SEG))).toString(16).padStart(16, '0'))
    t.equal(meta?.schema, 3, `${size} bytes: schema 3`)
    t.same(meta?.xxh64, want, `${size} bytes: ${want.length} segment digest(s)`)
    t.equal((await cache.verify(sha)).ok, true, `${size} bytes: fast verification passes`)
    if (size === 0) continue
    await flip(path, size - 1)
    const v = await cache.verify(sha)
    t.equal(v.ok, false, `${size} bytes: its last byte flipped is seen`)
    t.same(v.badChunks, [chunks.length - 1], `${size} bytes: in the last chunk`)
    await flip(path, size - 1)
  }
})

t.test('a byte flipped in segment k is found, and only the chunks overlapping segment k are sha256-checked', async (t) => {
  const { cache, asked } = await recordingCache(t)
  const size = 3 * SEG + 4321
  const { sha, path, chunks } = await putLarge(cache, size, 5 * 1024 * 1024 + 7, 'seg-k')
  const inSeg = (k: number) => chunks.filter((c) => c.offset < (k + 1) * SEG && c.offset + c.size > k * SEG)
  // The middle of segment 1, then the first byte of segment 2 (its chunk starts in segment 1).
  for (const [at, k] of [[SEG + SEG / 2 + 3, 1], [2 * SEG, 2]] as const) {
    await flip(path, at)
    asked.length = 0
    const v = await cache.verify(sha)
    const hit = chunks.find((c) => c.offset <= at && at < c.offset + c.size)!
    t.equal(v.ok, false, `byte ${at}: fast verification fails`)
    t.same(v.badChunks, [hit.index], `byte ${at}: its chunk ${hit.index} is named`)
    t.match(v.reason, new RegExp(`segment\\(s\\) differs \\(${k}\\)`), `byte ${at}: segment ${k} is named`)
    t.same(asked.flat(), inSeg(k).map((c) => ({ offset: c.offset, size: c.size })), `byte ${at}: only the ${inSeg(k).length} chunks of segment ${k} were hashed, not ${chunks.length}`)
    await flip(path, at)
  }
  asked.length = 0
  t.equal((await cache.verify(sha)).ok, true, 'restored')
  t.same(asked, [], 'a clean object costs no sha256 at all')
})

t.test('a wrong recorded digest of one segment, its chunks intact: only they are checked and the metadata is rewritten', async (t) => {
  const { cache, asked } = await recordingCache(t)
  const { sha, path, chunks, xxh64 } = await putLarge(cache, 2 * SEG + 77, 4 * 1024 * 1024 + 1, 'wrong-seg')
  const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  await writeFile(path + '.meta.json', JSON.stringify({ ...meta, xxh64: [xxh64[0], '0123456789abcdef', xxh64[2]] }))
  const r = await cache.lookup(sha)
  t.equal(r.status, 'hit')
  t.same((await cache.readMeta(sha))?.xxh64, xxh64, 'the right digest is recorded again')
  t.same(asked.flat().length, chunks.filter((c) => c.offset < 2 * SEG && c.offset + c.size > SEG).length, 'only segment 1\'s chunks were hashed')
  t.ok(cache.problems.some((p) => /recorded xxh64 of segment\(s\) 1 is wrong/.test(p.problem)), 'reported')
})

t.test('metadata with a wrong number of segment digests, or of schema 1, is malformed', async (t) => {
  const cache = await newCache(t)
  const { m, path } = await put(cache, seededBytes(100 * KiB, 'segcount'))
  const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  for (const [what, bad, re] of [
    ['two digests for one segment', { ...meta, xxh64: [meta.xxh64[0], meta.xxh64[0]] }, /xxh64 is not a list of 1 segment digest/],
    ['a string (schema 1\'s whole-object digest)', { ...meta, xxh64: meta.xxh64[0] }, /xxh64 is not a list/],
    ['schema 1', { ...meta, schema: 1, xxh64: meta.xxh64[0] }, /schema 1 \(an older format/],
  ] as const) {
    await writeFile(path + '.meta.json', JSON.stringify(bad))
    t.equal(await cache.readMeta(m.sha256), undefined, what)
    t.ok(cache.problems.some((p) => re.test(p.problem)), `${what}: reported`)
  }
})

t.test('verify uses the metadata list() read instead of reading it again; lookup reads it once', async (t) => {
  const cache = await newCache(t)
  const { m } = await put(cache, seededBytes(200 * KiB, 'once'))
  const { objects } = await cache.list()
  let reads = 0
  const readMeta = cache.readMeta.bind(cache)
  cache.readMeta = (sha: string) => {
    reads++
    return readMeta(sha)
  }
  const v = await cache.verify(m.sha256, { meta: objects[0]!.meta })
  t.equal(v.ok, true)
  t.equal(reads, 0, 'verify with the listed meta: no read')
  const r = await cache.lookup(m.sha256)
  t.equal(r.status, 'hit')
  t.equal(reads, 1, 'lookup (verify + touch): one read')
})

t.test('objectFiles lists the object files without reading metadata; verify takes a digest started before it', async (t) => {
  const { cache, asked } = await recordingCache(t)
  const { sha, path, chunks, xxh64 } = await putLarge(cache, 2 * SEG + 9, 4 * 1024 * 1024 + 3, 'digest-first')
  await writeFile(join(cache.dir, 'objects', 'sha256', sha.slice(0, 2), 'README'), 'foreign')
  t.same(await cache.objectFiles(), [{ sha256: sha, path }], 'the object only: not its metadata, not a foreign file')
  const digest = xxh64Segments(path) // started before the metadata is read
  const { objects } = await cache.list()
  t.equal((await cache.verify(sha, { meta: objects[0]!.meta, digest })).ok, true)
  // A digest that disagrees on segment 1 (as if the bytes had changed): its chunks are checked, found
  // good, and the metadata keeps digests computed by verify itself, not the caller's.
  asked.length = 0
  const v = await cache.verify(sha, { digest: Promise.resolve({ xxh64: [xxh64[0]!, '0123456789abcdef', xxh64[2]!], size: 2 * SEG + 9 }) })
  t.equal(v.ok, true)
  t.equal(asked.flat().length, chunks.filter((c) => c.offset < 2 * SEG && c.offset + c.size > SEG).length, 'segment 1\'s chunks were checked')
  t.same((await cache.readMeta(sha))?.xxh64, xxh64, 'the recorded digests are the true ones')
})

t.test('lookup takes a digest started earlier (Cache.fastDigest) and judges by it', async (t) => {
  const { cache, asked } = await recordingCache(t)
  const { sha, xxh64 } = await putLarge(cache, 2 * SEG + 9, 4 * 1024 * 1024 + 3, 'early-digest')
  const early = cache.fastDigest(sha) // what the boot stage starts before it lists the cache
  t.same((await early).xxh64, xxh64, 'fastDigest reads the same digests publish recorded')
  asked.length = 0
  t.equal((await cache.lookup(sha, { digest: early })).status, 'hit')
  t.equal(asked.flat().length, 0, 'a matching digest: no chunk hashed')
  // A digest that read fewer bytes than the object has (as if it had shrunk while read): not a hit.
  const short = await cache.lookup(sha, { digest: Promise.resolve({ xxh64, size: SEG }) })
  t.equal(short.status, 'corrupt', 'the caller\'s digest decided')
  t.match(short.status === 'corrupt' && short.reason, /read 67108864 bytes, expected/)
  t.throws(() => cache.fastDigest('not-a-sha'), /sha256/, 'a bad name is refused before any read')
})

t.test('metadata schema 3 keeps the chunk list compact; schema 2 is still read and rewritten as 3', async (t) => {
  const cache = await newCache(t)
  const { m, path } = await put(cache, seededBytes(400 * KiB, 'schema3'))
  const raw = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  t.equal(raw.schema, 3)
  t.equal(raw.chunks, undefined, 'no chunk objects on disk')
  t.same(raw.chunkSizes, m.chunks.map((c) => c.size))
  t.equal(raw.chunkSha256, m.chunks.map((c) => c.sha256).join(''))
  t.same((await cache.readMeta(m.sha256))?.chunks, m.chunks, 'read back as the same chunks (index, offset, size, sha256)')

  // An object published by the previous release (schema 2): read as it is, nothing re-hashed or fetched.
  const { chunkSizes: _s, chunkSha256: _d, ...rest } = raw
  await writeFile(path + '.meta.json', JSON.stringify({ ...rest, schema: 2, chunks: m.chunks }))
  t.same((await cache.readMeta(m.sha256))?.chunks, m.chunks, 'schema 2 read')
  t.equal((await cache.lookup(m.sha256)).status, 'hit', 'and a hit')
  t.equal(JSON.parse(await readFile(path + '.meta.json', 'utf8')).schema, 3, 'the hit rewrote it as schema 3')
  t.same(cache.problems, [], 'nothing reported')
})

t.test('a damaged compact chunk list is malformed metadata, named', async (t) => {
  const cache = await newCache(t)
  const { m, path } = await put(cache, seededBytes(300 * KiB, 'compact-bad'))
  const raw = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  const n = raw.chunkSizes.length as number
  t.ok(n > 1, `${n} chunks`)
  for (const [what, bad, re] of [
    ['a digest cut short', { ...raw, chunkSha256: raw.chunkSha256.slice(1) }, /chunkSha256 has \d+ hex digits, expected 64 for each/],
    ['upper-case hex', { ...raw, chunkSha256: raw.chunkSha256.toUpperCase() }, /chunkSha256 is not lower-case hex/],
    ['sizes that do not add up', { ...raw, chunkSizes: [...raw.chunkSizes.slice(0, -1), raw.chunkSizes.at(-1) + 1] }, /chunkSizes add up to \d+ bytes, not 307200/],
    ['a zero size', { ...raw, chunkSizes: [0, ...raw.chunkSizes.slice(1)] }, /chunkSizes\[0\] is not a positive integer/],
    ['a size that is a string', { ...raw, chunkSizes: ['65536', ...raw.chunkSizes.slice(1)] }, /chunkSizes\[0\]/],
    ['no chunk list', { ...raw, chunkSizes: undefined }, /chunkSizes is not a list/],
    ['digests as a list', { ...raw, chunkSha256: [raw.chunkSha256] }, /chunkSha256 is not a string/],
    ['an empty list for a non-empty object', { ...raw, chunkSizes: [], chunkSha256: '' }, /chunkSizes is empty/],
    ['a corrupt mark past the last chunk', { ...raw, corruptChunks: [n] }, /corruptChunks is not a list of chunk indexes/],
  ] as const) {
    await writeFile(path + '.meta.json', JSON.stringify(bad))
    t.equal(await cache.readMeta(m.sha256), undefined, what)
    t.ok(cache.problems.some((p) => re.test(p.problem)), `${what}: reported (${cache.problems.at(-1)?.problem})`)
  }
})
