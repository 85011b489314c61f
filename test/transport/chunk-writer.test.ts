/**
 * Chunk writing (agent/transport/chunk-writer.ts): received bytes gathered
 * in write buffers, verified in batches, and only the verified chunks
 * written, in large runs at their file offsets. The hooks here verify with
 * sha256 on this thread and write into memory (the download's own hooks
 * use the hash worker and the disk; faults.test.ts runs those).
 */
import t from 'tap'
import type { Chunk } from '../../agent/manifest/types.js'
import { ChunkWriter, receiveChunks, type BodySource, type ChunkWriterHooks } from '../../agent/transport/chunk-writer.js'
import { DIRECT_ALIGN } from '../../agent/transport/disk-writer.js'
import { chunkBytes, seededBytes, sha256Hex } from '../helpers/image.js'

const KiB = 1024

/** Hooks that verify by sha256 (a chunk in `spoil` is judged bad) and write into `out`. */
const memoryHooks = (chunks: readonly Chunk[], out: Buffer, spoil = new Set<number>()) => {
  const writes: { pos: number; len: number; aligned: boolean }[] = []
  const written: number[] = []
  const hooks: ChunkWriterHooks = {
    verify: async (sab, entries) => ({
      ok: entries.map((e) => !spoil.has(e.index) && sha256Hex(new Uint8Array(sab, e.start, e.len)) === chunks[e.index]!.sha256),
    }),
    write: async (b, pos) => {
      writes.push({ pos, len: b.length, aligned: b.byteOffset % DIRECT_ALIGN === pos % DIRECT_ALIGN })
      out.set(b, pos)
    },
    onWritten: async (idx) => {
      written.push(...idx)
    },
  }
  return { hooks, writes, written }
}

/** A body giving `data` from `start` in pieces of `piece` bytes, ending early at `endAt` if given. */
const body = (data: Buffer, start: number, piece: number, endAt = data.length): BodySource => {
  let at = start
  return {
    read: async (into) => {
      const n = Math.min(into.length, piece, endAt - at)
      if (n <= 0) return 0
      into.set(data.subarray(at, at + n))
      at += n
      return n
    },
  }
}

const image = (size: number, seed: string) => {
  const data = seededBytes(size, seed)
  return { data, chunks: chunkBytes(data, { min: 5 * KiB, max: 40 * KiB, seed }) }
}

t.test('received chunks are verified and only the good ones written, at their offsets, buffer and file aligned alike', async (t) => {
  const { data, chunks } = image(600 * KiB, 'writer')
  const out = Buffer.alloc(data.length)
  const spoil = new Set([3, 7])
  const { hooks, writes, written } = memoryHooks(chunks, out, spoil)
  // Small buffers (64 KiB): many rotations, chunks carried across buffers.
  const w = new ChunkWriter(64 * KiB, hooks, 2)
  const at = { pos: 0 }
  await receiveChunks(w, body(data, 0, 7777), { chunks, at, stopAt: data.length, collect: () => true, from: 'mem', onRead: () => undefined })
  await w.finish()
  t.equal(at.pos, data.length, 'received to the end')
  t.same([...written].sort((a, b) => a - b), chunks.map((c) => c.index).filter((i) => !spoil.has(i)), 'every chunk but the spoiled ones recorded')
  for (const c of chunks) {
    const got = out.subarray(c.offset, c.offset + c.size)
    if (spoil.has(c.index)) t.ok(got.every((x) => x === 0), `chunk ${c.index} (judged bad) never written`)
    else t.equal(sha256Hex(got), c.sha256, `chunk ${c.index} written in place`)
  }
  t.ok(writes.every((x) => x.aligned), 'each write\'s memory is congruent to its file offset modulo a page (O_DIRECT can take its middle)')
  t.ok(writes.length < chunks.length, `runs of good chunks written together (${writes.length} writes for ${chunks.length} chunks)`)
})

t.test('chunks not collected are discarded, and a body that ends early leaves its incomplete chunk unwritten', async (t) => {
  const { data, chunks } = image(300 * KiB, 'discard')
  const out = Buffer.alloc(data.length)
  const { hooks, written } = memoryHooks(chunks, out)
  const w = new ChunkWriter(128 * KiB, hooks)
  const wanted = new Set(chunks.filter((c) => c.index % 2 === 0).map((c) => c.index))
  const cut = chunks[5]!.offset + 100 // inside chunk 5
  const at = { pos: 0 }
  let kept = 0
  await receiveChunks(w, body(data, 0, 4096, cut), {
    chunks,
    at,
    stopAt: data.length,
    collect: (i) => wanted.has(i),
    from: 'mem',
    onRead: (n, k) => {
      if (k) kept += n
    },
  })
  w.drop()
  await w.finish()
  t.equal(at.pos, cut, 'the position reached is where the body ended')
  t.same(written.sort((a, b) => a - b), [0, 2, 4], 'the wanted chunks received whole, nothing else')
  t.ok(out.subarray(chunks[1]!.offset, chunks[2]!.offset).every((x) => x === 0), 'an unwanted chunk is never written')
  t.equal(kept, chunks[0]!.size + chunks[2]!.size + chunks[4]!.size, 'bytes of kept chunks counted as kept')
})

t.test('receiving starts mid-image at a chunk boundary and stops at stopAt', async (t) => {
  const { data, chunks } = image(200 * KiB, 'mid')
  const out = Buffer.alloc(data.length)
  const { hooks, written } = memoryHooks(chunks, out)
  const w = new ChunkWriter(64 * KiB, hooks)
  const from = chunks[2]!
  const to = chunks[4]!
  const at = { pos: from.offset }
  await receiveChunks(w, body(data, from.offset, 3000), { chunks, at, stopAt: to.offset + to.size, collect: () => true, from: 'mem', onRead: () => undefined })
  await w.finish()
  t.equal(at.pos, to.offset + to.size)
  t.same(written.sort((a, b) => a - b), [2, 3, 4])
})

t.test('add takes whole chunks from memory (delta) and a write error surfaces at the drain', async (t) => {
  const { data, chunks } = image(100 * KiB, 'add')
  const out = Buffer.alloc(data.length)
  const { hooks, written } = memoryHooks(chunks, out)
  const w = new ChunkWriter(64 * KiB, hooks) // at least the largest chunk, as the download sizes it
  for (const c of chunks) await w.add(c, data.subarray(c.offset, c.offset + c.size))
  await w.finish()
  t.same(written.sort((a, b) => a - b), chunks.map((c) => c.index))
  t.same(out, data)

  const failing = new ChunkWriter(64 * KiB, { ...hooks, write: async () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) })
  await failing.add(chunks[0]!, data.subarray(0, chunks[0]!.size))
  await t.rejects(failing.finish(), { code: 'EIO' })
})
