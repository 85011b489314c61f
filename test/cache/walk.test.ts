/**
 * The one walk over objects/ (agent/cache/walk.ts), on a real cache
 * directory with foreign things planted in it: objectFiles and list both
 * come from it and agree; nothing is followed.
 */
import t from 'tap'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { walkObjects } from '../../agent/cache/walk.js'
import { publishBytes } from '../helpers/cache.js'
import { seededBytes } from '../helpers/image.js'

t.test('one walk sees objects, their metadata, and every foreign thing, in order, following nothing', async (t) => {
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const data = seededBytes(50 * 1024, 'walk')
  const { m, path } = await publishBytes(cache, data)
  const root = join(cache.dir, 'objects', 'sha256')
  const shard = join(root, m.sha256.slice(0, 2))
  const other = 'ab'.repeat(32)
  await mkdir(join(root, 'ab'), { recursive: true })
  await writeFile(join(root, 'ab', other.slice(2)), 'no metadata') // an object without metadata
  await writeFile(join(shard, 'README'), 'foreign')
  await writeFile(join(shard, `.${m.sha256.slice(2)}.meta.json.123.x.tmp`), 'our own temp file')
  await writeFile(join(shard, `${'c'.repeat(62)}.meta.json`), '{}') // metadata without an object
  await symlink('/etc', join(root, 'zz'))
  const entries = await walkObjects(cache.dir)
  const byPath = Object.fromEntries(entries.map((e) => [e.path, e.kind === 'object' ? `object ${e.size} ${e.hasMeta}` : e.problem]))
  t.same(byPath, {
    [path]: `object ${data.length} true`,
    [join(root, 'ab', other.slice(2))]: 'object 11 false',
    [join(shard, 'README')]: 'foreign file',
    [join(shard, `${'c'.repeat(62)}.meta.json`)]: 'metadata without an object',
    [join(root, 'zz')]: 'symlink in objects/ (not followed)',
  })
  t.same(entries.map((e) => e.path), [...entries.map((e) => e.path)].sort(), 'in directory order')

  const files = await cache.objectFiles()
  t.same(files, entries.flatMap((e) => (e.kind === 'object' ? [{ sha256: e.sha256, path: e.path }] : [])), 'objectFiles: the objects of the walk, nothing reported')
  t.same(cache.problems, [])
  const { objects, problems } = await cache.list()
  t.same(objects.map((o) => o.sha256), [m.sha256], 'list: the objects with valid metadata')
  t.same(problems.map((p) => p.problem).sort(), ['foreign file', 'metadata without an object', 'object without metadata', 'symlink in objects/ (not followed)'])
  t.same(cache.problems.map((p) => p.path).sort(), problems.map((p) => p.path).sort(), 'and reported once each')
})

t.test('a cache without objects/ walks as empty', async (t) => {
  t.same(await walkObjects(t.testdir()), [])
})
