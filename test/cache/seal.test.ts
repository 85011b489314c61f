/**
 * fs-verity sealing and measured hits (agent/cache/seal.ts, verify.ts,
 * partial.ts; issue #19) on a real cache directory.
 *
 * This machine's kernel has no fs-verity (CONFIG_FS_VERITY is not set): the
 * real `fsverity` tool says so, and the first group of tests checks that
 * fallback for real. The kernel's side (a sealed file measured, a changed block
 * refused with EIO) runs only in the VM (test/vm/overlay.test.ts). Here a
 * scripted tool stands in for a kernel that sealed the object: its `measure`
 * answers what the real `fsverity digest` computes of the file (the digest such
 * a kernel would measure), its `enable` only records the call.
 */
import t, { type Test } from 'tap'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache, type PublishedDigests } from '../../agent/cache/store.js'
import { demoteToPartial } from '../../agent/cache/partial.js'
import { chooseHitCheck, parseMeasure, Sealer, type SealState } from '../../agent/cache/seal.js'
import { commands } from '../../agent/core/system.js'
import { BootAgentError } from '../../agent/core/errors.js'
import { run, type Runner } from '../../agent/core/exec.js'
import { silentLogger } from '../../agent/core/log.js'
import { badChunks, isReadError, hashRangesInline, type RangeHasher } from '../../agent/hash/file.js'
import { fsverityDigestOfFile } from '../../agent/hash/fsverity.js'
import { gate } from '../helpers/capability.js'
import { publishBytes } from '../helpers/cache.js'
import { sealedKernel } from '../helpers/sealed-kernel.js'
import { flipByte, seededBytes } from '../helpers/image.js'

const KiB = 1024
const fsverityTool = gate('fsverity')

const cacheWith = async (t: Test, sealer: Sealer) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'), { sealer, log: silentLogger() })
  const data = seededBytes(300 * KiB, 'seal')
  const { m, path, xxh64 } = await publishBytes(cache, data, { name: 'seal' })
  const published: PublishedDigests = { size: m.size, chunks: m.chunks, xxh64Segments: xxh64, fsverityDigest: await fsverityDigestOfFile(path) }
  return { cache, data, m, path, published }
}

t.test('the measure line is parsed; which check a hit gets is decided from the manifest, the measurement and the marks', async (t) => {
  const hex = 'ab'.repeat(32)
  t.equal(parseMeasure(`sha256:${hex} /run/boot-agent/cache/objects/sha256/ab/cd\n`), hex)
  t.equal(parseMeasure("ERROR: FS_IOC_MEASURE_VERITY failed on 'x': No data available"), undefined)
  const sealed: SealState = { sealed: true, digest: hex }
  t.same(chooseHitCheck({ published: hex, measured: sealed, corruptChunks: 0 }), { kind: 'measured' })
  t.match(chooseHitCheck({ published: undefined, measured: sealed, corruptChunks: 0 }), { kind: 'read', why: /no fsverityDigest/ })
  t.match(chooseHitCheck({ published: hex, measured: { sealed: false, why: 'No data available' }, corruptChunks: 0 }), { kind: 'read', why: /not sealed \(No data available\)/ })
  t.match(chooseHitCheck({ published: 'cd'.repeat(32), measured: sealed, corruptChunks: 0 }), { kind: 'read', why: /is not the manifest's/ })
  t.match(chooseHitCheck({ published: hex, measured: sealed, corruptChunks: 2 }), { kind: 'read', why: /2 chunk\(s\) marked corrupt at run time/ })
})

t.test('on this machine (no fs-verity in its kernel), for real: nothing is sealed, the reason is said once, and a hit is read as before', fsverityTool, async (t) => {
  const calls: string[][] = []
  const counting: Runner = (cmd, args, opts) => {
    calls.push([...args])
    return run(cmd, args, opts)
  }
  const { cache, m, published } = await cacheWith(t, new Sealer(counting))
  t.match(await cache.seal(m.sha256), /^not sealed: the cache filesystem has no fs-verity \(.*Operation not supported\)/, 'the real tool, refused by this kernel')
  t.match(cache.sealer.cannotSeal, /no fs-verity/, 'remembered')
  t.match(await cache.measure(m.sha256), { sealed: false, why: /no fs-verity/ })
  t.match(await cache.seal(m.sha256), /^not sealed/)
  t.equal(calls.length, 1, 'one run of the tool, not one per object and call')
  const v = await cache.verify(m.sha256, { published })
  t.equal(v.verifiedBy, 'manifest-xxh64', 'the hit is checked by reading (fast verify)')
  t.match(v, { ok: true, sealed: false, readBecause: /not sealed/ })
})

t.test('no fsverity tool: said as the reason, nothing sealed, nothing measured', async (t) => {
  const missing: Runner = async (cmd) => {
    throw new BootAgentError('ECOMMAND', `cannot run ${cmd}: spawn ${cmd} ENOENT`, { command: cmd })
  }
  const s = new Sealer(missing)
  t.match(await s.seal('/nowhere'), new RegExp(`^not sealed: no ${commands.fsverity} tool`))
  t.match(await s.measure('/nowhere'), { sealed: false, why: /no fsverity tool/ })
})

t.test('a sealed object whose measured digest is the manifest\'s is verified without reading a byte of it', fsverityTool, async (t) => {
  const calls: string[][] = []
  const { cache, m, path, published } = await cacheWith(t, new Sealer(sealedKernel(calls)))
  t.equal(await cache.seal(m.sha256), 'sealed')
  t.equal(await cache.seal(m.sha256), 'already sealed')
  calls.length = 0
  // A byte changed behind the measurement's back: a check that read the data would see it.
  // (Under a real sealed file the kernel would refuse that block at read; the measurement covers the tree.)
  await flipByte(path, m.chunks[1]!.offset + 5)
  const v = await cache.verify(m.sha256, { published })
  t.match(v, { ok: true, verifiedBy: 'manifest-fsverity', sealed: true }, 'measured: the changed byte was not read')
  t.same(calls, [['measure', path]], 'one measurement, no enable')
  const hit = await cache.lookup(m.sha256, { published })
  t.match(hit, { status: 'hit', verifiedBy: 'manifest-fsverity', sealed: true })
})

t.test('a sealed object is read instead of measured when its digest is not the manifest\'s, or chunks of it were marked corrupt', fsverityTool, async (t) => {
  const { cache, m, path, published } = await cacheWith(t, new Sealer(sealedKernel()))
  t.match(await cache.verify(m.sha256, { published }), { ok: true, verifiedBy: 'manifest-xxh64', sealed: false, readBecause: /not sealed \(.*No data available\)/ }, 'not sealed yet: read')
  await cache.seal(m.sha256)
  const other = await cache.verify(m.sha256, { published: { ...published, fsverityDigest: 'cd'.repeat(32) } })
  t.match(other, { ok: true, verifiedBy: 'manifest-xxh64', sealed: true, readBecause: /is not the manifest's/ }, 'another digest: fast verify')
  await flipByte(path, m.chunks[2]!.offset + 1)
  await cache.markCorrupt(m.sha256, [2])
  const marked = await cache.verify(m.sha256, { published })
  t.match(marked, { ok: false, badChunks: [2], sealed: true, readBecause: /1 chunk\(s\) marked corrupt at run time/ }, 'marked: read, and the bad chunk found')
  const { fsverityDigest: _, ...withoutDigest } = published
  const none = await cache.verify(m.sha256, { published: withoutDigest })
  t.notOk('sealed' in none, 'no digest in the manifest: not even measured')
})

t.test('a chunk that reads as EIO is a bad chunk, not a failed check', async (t) => {
  const dir = t.testdir()
  const data = seededBytes(200 * KiB, 'eio')
  const file = join(dir, 'obj')
  await writeFile(file, data)
  const { m } = { m: (await import('../helpers/image.js')).manifestFor(data, []) }
  await flipByte(file, m.chunks[1]!.offset)
  // The worker pool's EIO as it arrives (EHASHIO carrying the errno): this kernel cannot make a real one here.
  const eio: RangeHasher = async (path) => {
    throw new BootAgentError('EHASHIO', `hashing ${path}: EIO: i/o error, read`, { path, errno: 'EIO' })
  }
  t.ok(isReadError(new BootAgentError('EHASHIO', 'x', { errno: 'EIO' })))
  t.ok(isReadError(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' })))
  t.notOk(isReadError(new BootAgentError('EHASHIO', 'x', { errno: 'EACCES' })), 'another read failure stays fatal')
  t.same(await badChunks(file, m.chunks, { hasher: eio }), [1], 'each chunk read on its own: the one that differs is bad')
  const eacces: RangeHasher = async () => {
    throw new BootAgentError('EHASHIO', 'EACCES', { errno: 'EACCES' })
  }
  await t.rejects(badChunks(file, m.chunks, { hasher: eacces }), { code: 'EHASHIO' })
  t.same(await badChunks(file, m.chunks, { hasher: hashRangesInline }), [1])
})

t.test('repairing a sealed object: its good chunks are copied into a new file (a sealed file is never opened for writing)', fsverityTool, async (t) => {
  const { cache, data, m, path } = await cacheWith(t, new Sealer(sealedKernel()))
  await cache.seal(m.sha256)
  const ino = (await stat(path)).ino
  const good = m.chunks.filter((c) => c.index !== 1).map((c) => c.index)
  t.same(await demoteToPartial(cache, m.sha256, good, m.chunks), good, 'every good chunk kept')
  await t.rejects(stat(path), { code: 'ENOENT' }, 'the sealed object unlinked, not renamed')
  const part = cache.partPath(m.sha256)
  t.not((await stat(part)).ino, ino, 'the partial download is a new file')
  const bytes = await readFile(part)
  for (const c of m.chunks.filter((x) => x.index !== 1)) t.ok(bytes.subarray(c.offset, c.offset + c.size).equals(data.subarray(c.offset, c.offset + c.size)), `chunk ${c.index} copied`)
  const bad = m.chunks[1]!
  t.ok(bytes.subarray(bad.offset, bad.offset + bad.size).every((b) => b === 0), 'the bad chunk left to be fetched')
  t.same(JSON.parse(await readFile(cache.statePath(m.sha256), 'utf8')).verified, good)
})
