import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { pbkdf2, randomBytes } from 'node:crypto'
import { readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import xxhash from 'xxhash-wasm'
import { XXH64_SEGMENT_BYTES } from '../../agent/cache/meta.js'
import { Cache } from '../../agent/cache/store.js'
import { IntegrityError } from '../../agent/core/errors.js'
import { fetchImage } from '../../agent/transport/fetch-image.js'
import { gate } from '../helpers/capability.js'
import { flipByte, manifestFor, writeImage } from '../helpers/image.js'
import { forgeCachedObject } from '../helpers/forge.js'
import { xxh64Segments } from '../../agent/hash/segments.js'
import { startNginx, type Nginx } from '../helpers/nginx.js'

const MiB = 1024 * 1024
const imageBytes = async (ng: Nginx, path: string) => (await ng.access()).filter((a) => a.path === path).reduce((n, a) => n + a.bytes, 0)

/** An image of `size` bytes served by a fresh nginx (stopped at the test's end), an empty cache and the image's manifest. */
const served = async (t: Test, size: number, seed: string) => {
  const dir = t.testdir({ www: {} })
  const root = join(dir, 'www')
  const data = await writeImage(join(root, 'img.sqfs'), size, seed)
  const ng = await startNginx(root)
  t.teardown(() => ng.stop())
  const cache = await Cache.open(join(dir, 'cache'))
  return { dir, root, data, ng, cache, m: manifestFor(data, [`${ng.url}/img.sqfs`]) }
}

t.test('a cold fetch publishes an object named by the sha256 sha256sum computes', gate('nginx'), async (t) => {
  const { root, dir, data, cache, m } = await served(t, 3 * MiB + 12345, 'cold')
  const r = await fetchImage({ manifest: m, cache })
  const sum = execFileSync('sha256sum', [join(root, 'img.sqfs')], { encoding: 'utf8' }).split(' ')[0]
  t.equal(r.sha256, sum)
  t.equal(r.path, join(cache.dir, 'objects', 'sha256', sum!.slice(0, 2), sum!.slice(2)))
  t.equal(execFileSync('sha256sum', [r.path], { encoding: 'utf8' }).split(' ')[0], sum)
  t.equal(r.hit, false)
  t.equal(r.bytesDownloaded, data.length)
  const meta = JSON.parse(await readFile(r.path + '.meta.json', 'utf8'))
  t.equal(meta.size, data.length)
  t.equal(meta.schema, 3)
  t.same(meta.chunkSizes, m.chunks.map((c) => c.size), 'chunk sizes recorded in order')
  t.equal(meta.chunkSha256, m.chunks.map((c) => c.sha256).join(''), 'and their digests')
  t.match(meta.names, ['test-image'])
  t.same(await readdir(join(cache.dir, 'tmp')), [], 'no temp file left')
})

t.test('a warm fetch is a re-verified hit that requests no image bytes', gate('nginx'), async (t) => {
  const { ng, cache, m } = await served(t, 2 * MiB, 'warm')
  await fetchImage({ manifest: m, cache })
  await ng.clearAccess()
  for (const verify of ['fast', 'strong'] as const) {
    const r = await fetchImage({ manifest: m, cache, verify })
    t.equal(r.hit, true, `${verify} hit`)
    t.equal(r.bytesDownloaded, 0)
  }
  t.same(await ng.access(), [], 'nginx saw no request')
})

/** The served image's manifest as `manifest`/publish write it: with the xxh64 of each 64 MiB segment. */
const withSegments = async (s: { root: string; m: ReturnType<typeof manifestFor> }) => ({ ...s.m, xxh64Segments: (await xxh64Segments(join(s.root, 'img.sqfs'), { threads: 1 })).xxh64 })

t.test("a hit is checked against the manifest's segments: verifiedBy says so, and no image byte is requested", gate('nginx'), async (t) => {
  const s = await served(t, 2 * MiB, 'segs')
  const m = await withSegments(s)
  t.equal((await fetchImage({ manifest: m, cache: s.cache })).verifiedBy, 'download')
  await s.ng.clearAccess()
  t.match(await fetchImage({ manifest: m, cache: s.cache }), { hit: true, verifiedBy: 'manifest-xxh64', bytesDownloaded: 0, requests: 0 })
  t.match(await fetchImage({ manifest: m, cache: s.cache, verify: 'strong' }), { hit: true, verifiedBy: 'manifest-sha256' })
  const old = s.m // a manifest written before xxh64Segments existed
  t.match(await fetchImage({ manifest: old, cache: s.cache }), { hit: true, verifiedBy: 'manifest-sha256', bytesDownloaded: 0 }, 'without segments: every chunk against the manifest')
  t.same(await s.ng.access(), [], 'nginx saw no request')
})

t.test('an object replaced by other bytes of the same size, its metadata recomputed to match, is no hit: repaired from the manifest', gate('nginx'), async (t) => {
  for (const variant of ['with segments', 'an older manifest without them'] as const) {
    const s = await served(t, 4 * MiB, `forged-${variant}`)
    const m = variant === 'with segments' ? await withSegments(s) : s.m
    const first = await fetchImage({ manifest: m, cache: s.cache })
    const at = 2 * MiB + 100
    await forgeCachedObject(first.path, { at })
    t.equal((await s.cache.verify(m.sha256)).ok, true, `${variant}: the local metadata agrees with the forged bytes (what the fix must not rely on)`)
    await s.ng.clearAccess()
    const r = await fetchImage({ manifest: m, cache: s.cache })
    t.equal(r.hit, false, `${variant}: not a hit`)
    t.equal(r.verifiedBy, 'download')
    t.ok(r.chunksRepaired >= 1 && r.chunksRepaired <= 2, `${variant}: the forged chunk(s) re-fetched (${r.chunksRepaired})`)
    t.ok(r.bytesDownloaded > 0 && r.bytesDownloaded < 1 * MiB, `${variant}: only them (${r.bytesDownloaded} bytes)`)
    t.same(await readFile(r.path), s.data, `${variant}: the object is the published image again`)
    t.match(await fetchImage({ manifest: m, cache: s.cache }), { hit: true, bytesDownloaded: 0 }, `${variant}: and a hit after`)
  }
})

t.test('recordLater: a hit is handed back first and its use recorded after, under the object lock', gate('nginx'), async (t) => {
  const { cache, m } = await served(t, 2 * MiB, 'later')
  await fetchImage({ manifest: m, cache })
  const plain = await fetchImage({ manifest: m, cache })
  t.equal(plain.recorded, undefined, 'by default the use is recorded before fetchImage returns')
  const when = new Date('2030-01-02T03:04:05.000Z')
  const clocked = await Cache.open(cache.dir, { now: () => when })
  const r = await fetchImage({ manifest: m, cache: clocked, recordLater: true, digest: clocked.fastDigest(m.sha256) })
  t.equal(r.hit, true)
  t.type(r.recorded, Promise, 'the recording is handed back to be awaited')
  await r.recorded
  t.match(await cache.readMeta(m.sha256), { lastUsedAt: when.toISOString(), verifiedAt: when.toISOString(), names: [m.name] }, 'recorded as a verified use')
  const lock = await cache.lock(m.sha256, { timeoutMs: 2000 })
  await lock.release()
  t.pass('and the object lock was released')
})

t.test('one flipped byte in a cached object is detected and only its chunk is downloaded again', gate('nginx'), async (t) => {
  const { data, ng, cache, m } = await served(t, 4 * MiB, 'flip')
  const first = await fetchImage({ manifest: m, cache })
  const at = 3 * MiB + 777
  await flipByte(first.path, at, 0x40)
  const hit = m.chunks.find((c) => c.offset <= at && at < c.offset + c.size)!
  const v = await cache.verify(m.sha256)
  t.equal(v.ok, false, 'fast verification sees the flip')
  t.same(v.badChunks, [hit.index], 'and locates the chunk')
  await ng.clearAccess()
  const r = await fetchImage({ manifest: m, cache })
  t.equal(r.hit, false)
  t.equal(r.chunksRepaired, 1)
  t.equal(r.bytesDownloaded, hit.size)
  const log = await ng.access()
  t.equal(log.length, 1, 'one request')
  t.equal(log[0]!.range, `bytes=${hit.offset}-${hit.offset + hit.size - 1}`)
  t.equal(await imageBytes(ng, '/img.sqfs'), hit.size, 'nginx sent exactly that chunk')
  t.same(await readFile(r.path), data, 'repaired object is the image')
})

t.test('the file behind the URL replaced by other bytes fails with an integrity error and publishes nothing', gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  const root = join(dir, 'www')
  const data = await writeImage(join(root, 'img.sqfs'), 1 * MiB, 'orig')
  const ng = await startNginx(root)
  t.teardown(() => ng.stop())
  const cache = await Cache.open(join(dir, 'cache'))
  const url = `${ng.url}/img.sqfs`
  const m = manifestFor(data, [url])
  await writeImage(join(root, 'img.sqfs'), 1 * MiB, 'overwritten')
  const e = await fetchImage({ manifest: m, cache, retry: { ...(await import('../../agent/core/retry.js')).DEFAULT_RETRY_POLICY, baseDelayMs: 1 } }).catch((x: unknown) => x)
  t.type(e, IntegrityError)
  const ie = e as IntegrityError
  t.equal(ie.code, 'EINTEGRITY')
  t.equal(ie.url, url)
  t.equal(ie.expected, m.chunks[0]!.sha256)
  t.match(ie.message, url)
  t.match(ie.message, ie.expected)
  t.match(ie.message, ie.found)
  t.match(ie.message, m.sha256, 'names the image digest too')
  t.equal((await cache.list()).objects.length, 0, 'nothing published')
  t.equal((await cache.lookup(m.sha256)).status, 'miss')
})

t.test('a fetch leaves no file of the cache open (it could not be unmounted)', gate('nginx'), async (t) => {
  // 24 MiB: several write buffers are written at once, each through the O_DIRECT handle.
  // The race this guards against (two writes opening a handle each, one left to the GC)
  // is caught in most rounds with the pool kept busy; three rounds.
  const { cache, m } = await served(t, 24 * MiB + 4321, 'no-open-files')
  for (let round = 0; round < 3; round++) {
    await rm(cache.dir, { recursive: true, force: true })
    const c = await Cache.open(cache.dir)
    // Keep libuv's thread pool busy (as a loaded node's is), so that file opens
    // wait and several buffers' writes ask for the O_DIRECT handle at once.
    let busy = true
    const hog = async () => {
      while (busy) await new Promise((res) => pbkdf2('x', 'y', 200_000, 32, 'sha256', res))
    }
    const hogs = Array.from({ length: 4 }, hog)
    const r = await fetchImage({ manifest: m, cache: c }).finally(() => (busy = false))
    await Promise.all(hogs)
    t.equal(r.hit, false)
    const open: string[] = []
    for (const fd of await readdir('/proc/self/fd')) {
      const target = await readlink(join('/proc/self/fd', fd)).catch(() => '')
      if (target.startsWith(cache.dir)) open.push(target)
    }
    t.same(open, [], `round ${round}: no descriptor on the cache left`)
  }
})

t.test('two fetches of the same image at once: one downloads, the other waits for the lock and gets a hit', gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  const data = await writeImage(join(dir, 'www', 'img.sqfs'), 3 * MiB, 'twice')
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const m = manifestFor(data, [`${ng.url}/img.sqfs`])
  // Two Cache instances on one directory, as two processes would have.
  const [c1, c2] = await Promise.all([Cache.open(join(dir, 'cache')), Cache.open(join(dir, 'cache'))])
  const [r1, r2] = await Promise.all([fetchImage({ manifest: m, cache: c1 }), fetchImage({ manifest: m, cache: c2 })])
  t.same([r1.hit, r2.hit].sort(), [false, true])
  t.equal(await imageBytes(ng, '/img.sqfs'), data.length, 'the image was sent once')
})

t.test('an aborted fetch rejects with the abort reason, publishes nothing and keeps verified chunks', gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  const data = await writeImage(join(dir, 'www', 'img.sqfs'), 8 * MiB, 'abort')
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const m = manifestFor(data, [`${ng.url}/img.sqfs`])
  const cache = await Cache.open(join(dir, 'cache'))
  const ac = new AbortController()
  const reason = new Error('operator said stop')
  const e = await fetchImage({
    manifest: m,
    cache,
    signal: ac.signal,
    streams: 1,
    onProgress: (p) => {
      if (p.bytes > 2 * MiB) ac.abort(reason)
    },
  }).catch((x: unknown) => x)
  t.equal(e, reason)
  t.equal((await cache.lookup(m.sha256)).status, 'miss')
  const state = JSON.parse(await readFile(cache.statePath(m.sha256), 'utf8')) as { verified: number[] }
  t.ok(state.verified.length > 0, 'verified chunks kept for the next run')
  const r = await fetchImage({ manifest: m, cache })
  t.ok(r.bytesResumed > 0)
  t.equal(r.bytesResumed + r.bytesDownloaded, data.length)
})

t.test('a download records the xxh64 of each 64 MiB segment of the image, as an independent hash of each slice says', gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  const root = join(dir, 'www')
  const SEG = XXH64_SEGMENT_BYTES
  const data = randomBytes(2 * SEG + 12345)
  await writeFile(join(root, 'img.sqfs'), data)
  const ng = await startNginx(root)
  t.teardown(() => ng.stop())
  const cache = await Cache.open(join(dir, 'cache'))
  const m = manifestFor(data, [`${ng.url}/img.sqfs`], { min: 64 * 1024, max: 1024 * 1024 })
  const r = await fetchImage({ manifest: m, cache })
  const { h64Raw } = await xxhash()
  const want = [0, 1, 2].map((k) => h64Raw(data.subarray(k * SEG, Math.min(data.length, (k + 1) * SEG))).toString(16).padStart(16, '0'))
  const meta = JSON.parse(await readFile(r.path + '.meta.json', 'utf8'))
  t.equal(meta.schema, 3)
  t.same(meta.xxh64, want, 'three segment digests, the last one of 12345 bytes')
  t.equal((await cache.verify(m.sha256)).ok, true, 'and fast verification agrees')
})

/** Rewrites an object's metadata as the previous format wrote it (schema 1: one xxh64 of the whole object). */
const toSchema1 = async (path: string, data: Buffer) => {
  const meta = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  const { h64Raw } = await xxhash()
  await writeFile(path + '.meta.json', JSON.stringify({ ...meta, schema: 1, xxh64: h64Raw(data).toString(16).padStart(16, '0') }))
}

t.test('an object with schema-1 metadata heals without downloading good bytes: chunks sha256-checked, metadata rewritten', gate('nginx'), async (t) => {
  const { data, ng, cache, m } = await served(t, 3 * MiB + 5, 'schema1')
  const first = await fetchImage({ manifest: m, cache })
  await toSchema1(first.path, data)
  await ng.clearAccess()
  const r = await fetchImage({ manifest: m, cache })
  t.equal(r.bytesDownloaded, 0, 'no byte downloaded')
  t.equal(r.requests, 0)
  t.equal(r.bytesResumed, data.length, 'every byte kept after its chunk\'s sha256 matched')
  t.ok(cache.problems.some((p) => /schema 1/.test(p.problem)), 'the old metadata was reported')
  const meta = await cache.readMeta(m.sha256)
  t.equal(meta?.schema, 3, 'metadata rewritten in the current format')
  t.equal(meta?.xxh64.length, 1)
  t.same(await readFile(r.path), data)
  t.equal((await fetchImage({ manifest: m, cache })).hit, true, 'the next fetch is a plain hit')
  t.same(await ng.access(), [], 'nginx saw no request')
})

t.test('an object with schema-1 metadata and a flipped byte: only the bad chunk is downloaded', gate('nginx'), async (t) => {
  const { data, ng, cache, m } = await served(t, 3 * MiB, 'schema1-flip')
  const first = await fetchImage({ manifest: m, cache })
  await toSchema1(first.path, data)
  const at = 2 * MiB + 99
  await flipByte(first.path, at)
  const hit = m.chunks.find((c) => c.offset <= at && at < c.offset + c.size)!
  await ng.clearAccess()
  const r = await fetchImage({ manifest: m, cache })
  t.equal(r.chunksRepaired, 1)
  t.equal(r.bytesDownloaded, hit.size, 'that chunk only')
  t.equal((await cache.readMeta(m.sha256))?.schema, 3)
  t.same(await readFile(r.path), data)
})

t.test('fs-verity (a scripted tool: this kernel has none): sealed after the download, the next hit measured without a read, a marked chunk repaired into a new file and sealed again', gate('nginx', 'fsverity'), async (t) => {
  const { sealedKernel } = await import('../helpers/sealed-kernel.js')
  const { Sealer } = await import('../../agent/cache/seal.js')
  const { fsverityDigestOfFile } = await import('../../agent/hash/fsverity.js')
  const { stat } = await import('node:fs/promises')
  const { dir, root, ng } = await served(t, 3 * MiB + 777, 'verity')
  const calls: string[][] = []
  const cache = await Cache.open(join(dir, 'cache-verity'), { sealer: new Sealer(sealedKernel(calls)) })
  const data = await readFile(join(root, 'img.sqfs'))
  const m = { ...manifestFor(data, [`${ng.url}/img.sqfs`]), fsverityDigest: await fsverityDigestOfFile(join(root, 'img.sqfs')) }
  const cold = await fetchImage({ manifest: m, cache })
  t.match(cold, { hit: false, verifiedBy: 'download', sealed: 'sealed' }, 'sealed after the download')
  await flipByte(cold.path, m.chunks[1]!.offset + 3) // unseen by a measured hit: no byte is read
  const hit = await fetchImage({ manifest: m, cache })
  t.match(hit, { hit: true, verifiedBy: 'manifest-fsverity', bytesDownloaded: 0 }, 'measured')
  t.equal(hit.sealed, undefined, 'not sealed again')
  const ino = (await stat(cold.path)).ino
  await cache.markCorrupt(m.sha256, [1]) // what the daemon does after the kernel refused the block
  const before = await imageBytes(ng, '/img.sqfs')
  const fixed = await fetchImage({ manifest: m, cache })
  t.match(fixed, { hit: false, chunksRepaired: 1, sealed: 'sealed' }, 'read (marked), the bad chunk fetched, sealed again')
  t.equal(await imageBytes(ng, '/img.sqfs') - before, m.chunks[1]!.size, 'only that chunk served')
  t.not((await stat(fixed.path)).ino, ino, 'a new file: the sealed one was never written')
  t.same(await readFile(fixed.path), data)
  t.match(await fetchImage({ manifest: m, cache }), { hit: true, verifiedBy: 'manifest-fsverity' })
})
