/**
 * The download's hash worker (agent/hash/download-hasher.ts) on its own:
 * verdicts, in-order feeding of the whole-image digests, and when a buffer
 * is released for reuse. Downloads through it are covered end to end in the
 * fetch-image, faults, kill9 and delta tests.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import xxhash from 'xxhash-wasm'
import { xxhWasmModule } from '../../agent/hash/xxh.js'
import { ioBuffer } from '../../agent/core/io-buffer.js'
import { DownloadHasher, type ChunkToVerify } from '../../agent/hash/download-hasher.js'

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

/** A page-aligned shared buffer holding `parts` at the given offsets (some deliberately not page-aligned). */
const sharedWith = (parts: { off: number; bytes: Buffer }[]) => {
  const buf = ioBuffer(1024 * 1024, { shared: true })
  for (const p of parts) p.bytes.copy(buf, p.off)
  return buf.buffer as SharedArrayBuffer
}

t.test('verdicts, in-order feeding and release; digests equal independent hashes of the bytes in order', async (t) => {
  const fed: number[] = []
  const h = new DownloadHasher(await xxhWasmModule(), (i) => fed.push(i))
  t.teardown(() => h.close())
  const chunks = [randomBytes(70_000), randomBytes(4096), randomBytes(123_457), randomBytes(9)]
  // Offsets 88 and 4095 modulo a page: the worker copies into xxh64's memory at the same page offset.
  const offs = [88, 80_000, 90_000 + 4095, 300_000]
  const sab = sharedWith(chunks.map((bytes, k) => ({ off: offs[k]!, bytes })))
  const item = (k: number, expected = sha(chunks[k]!)): ChunkToVerify => ({ index: k, off: offs[k]!, len: chunks[k]!.length, expected })

  // Chunk 1 first: good but out of order, so not fed.
  const early = await h.chunks(sab, [item(1)])
  t.same(early.found, [sha(chunks[1]!)])
  await early.released
  t.same(fed, [], 'an out-of-order chunk is not fed')

  // Chunk 0 with a wrong expectation: found is the real digest, not fed.
  const wrong = await h.chunks(sab, [item(0, '0'.repeat(64))])
  t.same(wrong.found, [sha(chunks[0]!)])
  await wrong.released
  t.same(fed, [], 'a chunk that does not match is not fed')

  // Chunks 0..3 in one batch: all fed, in order.
  const all = await h.chunks(sab, [0, 1, 2, 3].map((k) => item(k)))
  t.same(all.found, chunks.map(sha))
  await all.released
  t.same(fed, [0, 1, 2, 3], 'fed in image order')

  const whole = Buffer.concat(chunks)
  const d = await h.digest()
  t.equal(d.sha256, sha(whole), 'whole-image sha256')
  const { h64Raw } = await xxhash()
  t.same(d.xxh64, [h64Raw(whole).toString(16).padStart(16, '0')], 'xxh64 of the one segment')
})

t.test('an empty batch asks the worker nothing and is released at once', async (t) => {
  const h = new DownloadHasher(await xxhWasmModule(), () => undefined)
  t.teardown(() => h.close())
  const empty = await h.chunks(sharedWith([]), [])
  t.same(empty.found, [])
  await empty.released
  t.same((await h.digest()).sha256, sha(Buffer.alloc(0)), 'nothing was fed')
})

t.test('after close, chunks() rejects and its buffer counts as released', async (t) => {
  const h = new DownloadHasher(await xxhWasmModule(), () => undefined)
  await h.close()
  const sab = sharedWith([])
  await t.rejects(h.chunks(sab, [{ index: 0, off: 0, len: 10, expected: '0'.repeat(64) }]), /closed/)
})
