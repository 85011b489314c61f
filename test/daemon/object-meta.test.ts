import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { xxh64Segments } from '../../agent/hash/segments.js'
import { readObjectMeta } from '../../agent/daemon/object-meta.js'
import { manifestFor, seededBytes } from '../helpers/image.js'

t.test('the daemon reads the metadata the cache writes (schema 3), and the previous schema 1 too', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const data = seededBytes(300 * 1024, 'daemon-meta')
  const m = manifestFor(data, [], { name: 'CPE-base' })
  const from = join(cache.tmpDir, `${m.sha256}.part`)
  await writeFile(from, data)
  const { xxh64 } = await xxh64Segments(from)
  const path = await cache.publish({ from, sha256: m.sha256, computedSha256: m.sha256, size: data.length, xxh64, chunks: m.chunks, name: 'CPE-base' })
  await cache.markCorrupt(m.sha256, [1])
  const meta = await readObjectMeta(path)
  t.equal(meta.raw.schema, 3, 'written as schema 3')
  t.same(meta.names, ['CPE-base'])
  t.same(meta.corruptChunks, [1])
  t.same(meta.chunks, m.chunks, 'the compact chunk list read back as chunks')
  const raw = JSON.parse(await readFile(path + '.meta.json', 'utf8'))
  await writeFile(path + '.meta.json', JSON.stringify({ ...raw, schema: 1, xxh64: xxh64[0] }))
  t.same((await readObjectMeta(path)).names, ['CPE-base'], 'schema 1 still shows its names')
})
