/**
 * A download in progress (agent/cache/partial.ts) on a real cache
 * directory: chunks recorded while writing are made durable in the
 * background, a failure of that surfaces at the next record or at settle,
 * and a resumed download trusts only chunks that verify again.
 */
import t, { type Test } from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PartialObject, demoteToPartial, removePartial } from '../../agent/cache/partial.js'
import { Cache } from '../../agent/cache/store.js'
import { silentLogger } from '../../agent/core/log.js'
import { publishBytes } from '../helpers/cache.js'
import { flipByte, manifestFor, seededBytes } from '../helpers/image.js'

const setup = async (t: Test) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const data = seededBytes(300 * 1024, 'partial')
  const m = manifestFor(data, [])
  return { cache, data, m }
}

const state = async (cache: Cache, sha: string) => JSON.parse(await readFile(cache.statePath(sha), 'utf8')) as { verified: number[] }

t.test('record marks chunks written and persists in the background; settle waits for it', async (t) => {
  const { cache, data, m } = await setup(t)
  const p = await PartialObject.open(cache, m, { log: silentLogger() })
  t.teardown(() => p.close())
  const c0 = m.chunks[0]!
  await p.fh.write(data.subarray(c0.offset, c0.offset + c0.size), 0, c0.size, c0.offset)
  await p.record([0])
  t.equal(p.written[0], 1, 'marked at once')
  await p.settle()
  t.same((await state(cache, m.sha256)).verified, [0], 'durable after settle')
  t.same(p.missing(), m.chunks.slice(1).map((c) => c.index))
  t.equal(p.verifiedBytes, c0.size)
})

t.test('a failed background persist is rethrown by the next record and by settle', async (t) => {
  const { cache, m } = await setup(t)
  const p = await PartialObject.open(cache, m, { log: silentLogger() })
  t.teardown(() => p.close())
  const failure = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })
  p.persist = async () => {
    throw failure
  }
  await p.record([0]) // starts the persist that fails
  await t.rejects(p.settle(), failure)
  await t.rejects(p.record([1]), failure, 'the next record says so')
  t.equal(p.written[1], 0, 'and records nothing more')
})

t.test('resuming: listed chunks are re-verified, a damaged one is dropped; removePartial clears both files', async (t) => {
  const { cache, data, m } = await setup(t)
  const p = await PartialObject.open(cache, m, { log: silentLogger() })
  await p.fh.write(data, 0, data.length, 0)
  p.markWritten(m.chunks.map((c) => c.index))
  await p.persist(true)
  await p.close()
  await flipByte(cache.partPath(m.sha256), m.chunks[1]!.offset)
  const again = await PartialObject.open(cache, m, { log: silentLogger() })
  t.same(again.missing(), [1], 'only the damaged chunk is missing')
  await again.close()
  await removePartial(cache, m.sha256)
  await t.rejects(readFile(cache.partPath(m.sha256)), { code: 'ENOENT' })
  await t.rejects(readFile(cache.statePath(m.sha256)), { code: 'ENOENT' })
})

t.test('demoteToPartial turns a damaged object into a partial download that trusts only its good chunks', async (t) => {
  const { cache, data, m } = await setup(t)
  const { path: obj } = await publishBytes(cache, data, { chunks: m.chunks })
  const good = m.chunks.filter((c) => c.index !== 2).map((c) => c.index)
  t.same(await demoteToPartial(cache, m.sha256, good, m.chunks), good, 'every good chunk kept')
  await t.rejects(readFile(obj), { code: 'ENOENT' }, 'out of objects/')
  await t.rejects(readFile(cache.metaPath(m.sha256)), { code: 'ENOENT' }, 'its metadata gone')
  t.same((await state(cache, m.sha256)).verified, good, 'the state lists the good chunks')
  t.same(await readFile(cache.partPath(m.sha256)), data, 'the bytes moved, not copied')
  const p = await PartialObject.open(cache, m, { log: silentLogger(), trusted: good })
  t.same(p.missing(), [2])
  await p.close()
})
