/**
 * Delta reuse (agent/transport/reuse.ts): chunks a download needs are
 * copied from other cached objects, each only if its bytes verify. Real
 * cache, real partial file; the donor's damage is a byte flipped on disk
 * behind its metadata's back.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PartialObject } from '../../agent/cache/partial.js'
import { Cache } from '../../agent/cache/store.js'
import { silentLogger } from '../../agent/core/log.js'
import type { Chunk } from '../../agent/manifest/types.js'
import { DiskWriter } from '../../agent/transport/disk-writer.js'
import { reuseChunks } from '../../agent/transport/reuse.js'
import { publishBytes } from '../helpers/cache.js'
import { flipByte, manifestFor, seededBytes, sha256Hex } from '../helpers/image.js'

const KiB = 1024
const CHUNK = 32 * KiB

const fixedChunks = (data: Buffer): Chunk[] =>
  Array.from({ length: Math.ceil(data.length / CHUNK) }, (_, i) => {
    const b = data.subarray(i * CHUNK, (i + 1) * CHUNK)
    return { index: i, offset: i * CHUNK, size: b.length, sha256: sha256Hex(b) }
  })

t.test('shared chunks are copied from a donor object; one that does not verify on disk is left to download', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const v1 = seededBytes(8 * CHUNK, 'v1')
  const v2 = Buffer.concat([v1.subarray(0, 5 * CHUNK), seededBytes(3 * CHUNK, 'v2-new')])
  const m2 = manifestFor(v2, [], { chunks: fixedChunks(v2) })
  const { path: donor } = await publishBytes(cache, v1, { chunks: fixedChunks(v1) })
  await flipByte(donor, 1 * CHUNK + 5) // chunk 1 of the donor is damaged

  const partial = await PartialObject.open(cache, m2, { log: silentLogger() })
  t.teardown(() => partial.close())
  const disk = new DiskWriter({ fh: partial.fh, path: partial.path, log: silentLogger(), noSpace: async () => Promise.reject(new Error('unexpected')) })
  const reused = await reuseChunks({ chunks: m2.chunks, partial, cache, sha256: m2.sha256, bufBytes: 64 * KiB, write: (b, p) => disk.writeBuffered(b, p), log: silentLogger(), signal: new AbortController().signal })
  await partial.settle()
  t.equal(reused, 4 * CHUNK, 'chunks 0, 2, 3, 4: the shared ones that verify')
  t.same(partial.missing(), [1, 5, 6, 7], 'the damaged one and the new ones are left to download')
  const bytes = await readFile(partial.path)
  for (const i of [0, 2, 3, 4]) t.same(bytes.subarray(i * CHUNK, (i + 1) * CHUNK), v2.subarray(i * CHUNK, (i + 1) * CHUNK), `chunk ${i} copied`)
  t.ok(bytes.subarray(CHUNK, 2 * CHUNK).every((x) => x === 0), 'the damaged bytes were not copied')
})

t.test('nothing missing or no donor: nothing copied', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const data = seededBytes(4 * CHUNK, 'alone')
  const m = manifestFor(data, [], { chunks: fixedChunks(data) })
  const partial = await PartialObject.open(cache, m, { log: silentLogger() })
  t.teardown(() => partial.close())
  const o = { chunks: m.chunks, partial, cache, sha256: m.sha256, bufBytes: 64 * KiB, write: async () => undefined, log: silentLogger(), signal: new AbortController().signal }
  t.equal(await reuseChunks(o), 0, 'an empty cache has no donor')
  partial.markWritten([0, 1, 2, 3])
  t.equal(await reuseChunks(o), 0, 'nothing missing')
})
