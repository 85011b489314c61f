/**
 * The whole-image digests of a download (agent/transport/digest-feed.ts):
 * extended strictly in image order, over chunks read back from the partial
 * file, on the real hash workers and a real partial file.
 */
import t from 'tap'
import { join } from 'node:path'
import { xxh64Segments } from '../../agent/hash/segments.js'
import { PartialObject } from '../../agent/cache/partial.js'
import { Cache } from '../../agent/cache/store.js'
import { silentLogger } from '../../agent/core/log.js'
import { DigestFeed, FEED_BUFFER_BYTES } from '../../agent/transport/digest-feed.js'
import { manifestFor, seededBytes, sha256Hex } from '../helpers/image.js'

t.test('written chunks are fed in order up to the first gap; once none is missing the digests are the image\'s', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  // More than two read-back buffers, so that both are used in turn.
  const data = seededBytes(2 * FEED_BUFFER_BYTES + 12_345, 'feed')
  const m = manifestFor(data, [])
  const p = await PartialObject.open(cache, m, { log: silentLogger() })
  t.teardown(() => p.close())
  await p.fh.write(data, 0, data.length, 0)
  const gap = Math.floor(m.chunks.length / 2)
  p.markWritten(m.chunks.filter((c) => c.index !== gap).map((c) => c.index))
  const feed = await DigestFeed.start(m.chunks, p, new AbortController().signal)
  t.teardown(() => feed.close())
  await feed.advance()
  t.equal(feed.cursor, gap, 'stopped at the missing chunk')
  t.equal(feed.complete, false)
  p.markWritten([gap])
  await feed.advance()
  t.equal(feed.complete, true, 'then went to the end')
  const d = await feed.digest()
  t.equal(d.sha256, sha256Hex(data), 'sha256 of the image')
  t.same(d.xxh64, (await xxh64Segments(p.path)).xxh64, 'xxh64 of each segment, as the cache computes it')
})

t.test('an aborted download stops reading back', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const data = seededBytes(300 * 1024, 'abort')
  const m = manifestFor(data, [])
  const p = await PartialObject.open(cache, m, { log: silentLogger() })
  t.teardown(() => p.close())
  p.markWritten(m.chunks.map((c) => c.index))
  const ac = new AbortController()
  const feed = await DigestFeed.start(m.chunks, p, ac.signal)
  t.teardown(() => feed.close())
  ac.abort(new Error('stop'))
  await t.rejects(feed.advance(), { message: 'stop' })
  t.equal(feed.cursor, 0)
})
