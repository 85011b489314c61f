/**
 * A full cache: a real small tmpfs (root only), so ENOSPC is the kernel's.
 * The fetch evicts least recently used objects (never pinned ones) and
 * retries; when nothing more may go, CacheFullError tells the caller how
 * much was needed (the boot stage then applies its cacheFull policy).
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { CacheFullError } from '../../agent/core/errors.js'
import { fetchImage } from '../../agent/transport/fetch-image.js'
import { gate } from '../helpers/capability.js'
import { manifestFor, writeImage } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'

const MiB = 1024 * 1024

const setup = async (t: Test) => {
  const dir = t.testdir({ www: {} })
  // Outside the test dir: tap removes that before running teardowns, and a mount point must be unmounted first.
  const mnt = await mkdtemp(join(tmpdir(), 'ba-pipeline-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=5m,mode=0700', 'ba-pipeline-test', mnt])
  t.teardown(() => {
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' })
    } catch (e) {
      execFileSync('umount', ['-l', mnt])
      throw new Error(`umount ${mnt}: ${String((e as { stderr?: unknown }).stderr)}`)
    } finally {
      rmSync(mnt, { recursive: true, force: true })
    }
  })
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const image = async (name: string, size: number) => {
    const data = await writeImage(join(dir, 'www', `${name}.sqfs`), size, name)
    return manifestFor(data, [`${ng.url}/${name}.sqfs`], { name })
  }
  return { mnt, image }
}

const age = async (cache: Cache, sha: string, when: string) => {
  const p = cache.metaPath(sha)
  await writeFile(p, JSON.stringify({ ...JSON.parse(await readFile(p, 'utf8')), lastUsedAt: when }))
}

t.test('no room for a new image: least recently used objects are evicted, then it fits', gate('root'), async (t) => {
  const { mnt, image } = await setup(t)
  const cache = await Cache.open(join(mnt, 'cache'))
  const a = await image('a', 1.5 * MiB)
  const b = await image('b', 1.5 * MiB)
  const c = await image('c', 2 * MiB)
  await fetchImage({ manifest: a, cache })
  await fetchImage({ manifest: b, cache })
  await age(cache, a.sha256, '2026-01-01T00:00:00Z')
  const r = await fetchImage({ manifest: c, cache, pin: [b.sha256] })
  t.equal((await cache.verify(r.sha256, { mode: 'strong' })).ok, true)
  const left = (await cache.list()).objects.map((o) => o.meta.names[0]).sort()
  t.same(left, ['b', 'c'], 'the oldest (a) went; the pinned one (b) stayed')
})

t.test('ENOSPC in the middle of writing evicts and retries the write', gate('root'), async (t) => {
  const { mnt, image } = await setup(t)
  // A cache that over-reports free space, so the up-front check passes and the kernel's ENOSPC comes mid-download.
  const cache = await Cache.open(join(mnt, 'cache'))
  const a = await image('a', 2.5 * MiB)
  const c = await image('c', 3 * MiB)
  await fetchImage({ manifest: a, cache })
  cache.freeBytes = async () => 1e12
  const r = await fetchImage({ manifest: c, cache })
  t.equal((await cache.verify(r.sha256, { mode: 'strong' })).ok, true)
  t.same((await cache.list()).objects.map((o) => o.meta.names[0]), ['c'])
})

t.test('when every object that could go is pinned, the fetch fails with CacheFullError and publishes nothing', gate('root'), async (t) => {
  const { mnt, image } = await setup(t)
  const cache = await Cache.open(join(mnt, 'cache'))
  const a = await image('a', 1.5 * MiB)
  const b = await image('b', 1.5 * MiB)
  const c = await image('c', 2.5 * MiB)
  await fetchImage({ manifest: a, cache })
  await fetchImage({ manifest: b, cache })
  const e = await fetchImage({ manifest: c, cache, pin: [a.sha256, b.sha256] }).catch((x: unknown) => x)
  t.type(e, CacheFullError)
  t.equal((e as CacheFullError).code, 'ECACHEFULL')
  t.ok((e as CacheFullError).needed >= 2.5 * MiB)
  t.equal((await cache.lookup(c.sha256)).status, 'miss')
  t.equal((await cache.list()).objects.length, 2, 'pinned objects kept')
  await mkdir(join(mnt, 'x')) // the file system still works
})
