import t, { type Test } from 'tap'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { appendFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { ImageStore, hashFile } from '../../agent/head/store.js'
import { parseManifest } from '../../agent/manifest/index.js'
import { buildManifest } from '../../agent/manifest/index.js'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { imageBytes, sha256 } from '../helpers/head-fixtures.js'
import { waitFor } from '../helpers/wait.js'
import { gate } from '../helpers/capability.js'
import { PAGE_BYTES, tinyFs } from '../helpers/tiny-fs.js'

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false)

/** A squashfs-looking image: the superblock magic `hsqs`, then bytes. */
const squashfsBytes = (size: number, seed: number): Buffer => {
  const b = imageBytes(size, seed)
  b.write('hsqs', 0, 'latin1')
  return b
}

/** A process holding a lock (test/helpers/lock-racer.ts). */
const lockHolder = (t: Test) => {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [...process.execArgv, new URL('../helpers/lock-racer.ts', import.meta.url).pathname])
  t.teardown(() => void child.kill('SIGKILL'))
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  return async (cmd: string): Promise<string> => {
    child.stdin.write(cmd + '\n')
    const r = await lines.next()
    return r.done ? 'exited' : r.value
  }
}

t.test('storeObject copies the bytes under their sha256, read-only, and records size, arch, format and file identity', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = squashfsBytes(300_000, 1)
  await writeFile(join(dir, 'img'), bytes)
  const r = await store.storeObject(join(dir, 'img'), { arch: 'aarch64' })
  t.same(r, { sha256: sha256(bytes), size: bytes.length, created: true })
  const obj = store.objectPath(r.sha256)
  t.ok((await readFile(obj)).equals(bytes))
  const st = await stat(obj)
  t.equal(st.mode & 0o777, 0o444)
  const rec = await store.objectRecord(r.sha256)
  t.match(rec, { schema: 1, sha256: r.sha256, size: bytes.length, arch: 'aarch64', format: 'squashfs', file: { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino } })
  t.ok(Number.isFinite(Date.parse(rec?.storedAt ?? '')), 'storedAt is a time')
  t.same(await readdir(join(dir, 'store', 'tmp')), [], 'no temp file left behind')
})

t.test('bytes without the squashfs magic are recorded as raw, unless a format is given', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const raw = imageBytes(10_000, 2)
  raw.write('xxxx', 0, 'latin1')
  await writeFile(join(dir, 'raw'), raw)
  const a = await store.storeObject(join(dir, 'raw'), { arch: 'x86_64' })
  t.equal((await store.objectRecord(a.sha256))?.format, 'raw')
  const other = imageBytes(10_000, 3)
  await writeFile(join(dir, 'erofs'), other)
  const b = await store.storeObject(join(dir, 'erofs'), { arch: 'x86_64', format: 'erofs' })
  t.equal((await store.objectRecord(b.sha256))?.format, 'erofs')
})

t.test('storing bytes already stored writes nothing: same inode, same mtime, created false', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = imageBytes(100_000, 4)
  await writeFile(join(dir, 'a'), bytes)
  await writeFile(join(dir, 'b'), bytes)
  const first = await store.storeObject(join(dir, 'a'), { arch: 'x86_64' })
  const before = await stat(store.objectPath(first.sha256))
  const recBefore = await store.objectRecord(first.sha256)
  const second = await store.storeObject(join(dir, 'b'), { arch: 'x86_64' })
  t.same(second, { ...first, created: false })
  const after = await stat(store.objectPath(first.sha256))
  t.same([after.ino, after.mtimeMs], [before.ino, before.mtimeMs])
  t.same(await store.objectRecord(first.sha256), recBefore, 'the record is not rewritten')
  t.equal(await store.drift(first.sha256), undefined)
})

t.test('concurrent stores of the same bytes all succeed, exactly one writes them, and the object is whole', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = imageBytes(2_000_000, 5)
  const srcs = await Promise.all([0, 1, 2, 3].map(async (i) => {
    await writeFile(join(dir, `src${i}`), bytes)
    return join(dir, `src${i}`)
  }))
  const results = await Promise.all(srcs.map((s) => new ImageStore(join(dir, 'store')).storeObject(s, { arch: 'x86_64' })))
  t.ok(results.every((r) => r.sha256 === sha256(bytes)))
  t.ok(results.filter((r) => r.created).length >= 1, 'at least one store wrote the bytes')
  t.equal(await hashFile(store.objectPath(sha256(bytes))), sha256(bytes))
  t.equal(await store.drift(sha256(bytes)), undefined)
  t.same(await readdir(join(dir, 'store', 'tmp')), [])
})

t.test('an aborted store leaves neither an object nor a temp file', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = imageBytes(1_000_000, 6)
  await writeFile(join(dir, 'img'), bytes)
  const ac = new AbortController()
  ac.abort()
  await t.rejects(store.storeObject(join(dir, 'img'), { arch: 'x86_64', signal: ac.signal }), { name: 'AbortError' })
  t.equal(await exists(store.objectPath(sha256(bytes))), false)
  t.same(await readdir(join(dir, 'store', 'tmp')), [])
})

t.test('moveName appends to the history, then points current at the new digest, naming the previous one', async (t) => {
  const store = new ImageStore(t.testdir())
  const a = 'a'.repeat(64)
  const b = 'b'.repeat(64)
  t.equal(await store.current('img'), undefined, 'a name never published has no current')
  t.same(await store.history('img'), [])
  const e1 = await store.moveName('img', { sha256: a, size: 10, arch: 'x86_64' }, new Date('2026-01-01T00:00:00Z'))
  t.same(e1, { name: 'img', sha256: a, size: 10, arch: 'x86_64', time: '2026-01-01T00:00:00.000Z' })
  const e2 = await store.moveName('img', { sha256: b, size: 20, arch: 'x86_64' }, new Date('2026-01-02T00:00:00Z'))
  t.equal(e2.previous, a)
  t.same(await store.current('img'), e2)
  t.same(await store.history('img'), [e1, e2])
  t.equal(await exists(join(store.dir, 'names', 'img', '.lock')), false, 'the lock is released')
})

t.test('history skips a line torn by a crash mid-append and lines that are not entries', async (t) => {
  const store = new ImageStore(t.testdir())
  const a = 'a'.repeat(64)
  const e1 = await store.moveName('img', { sha256: a, size: 1, arch: 'x86_64' })
  const history = join(store.dir, 'names', 'img', 'history.jsonl')
  await appendFile(history, JSON.stringify({ name: 'img', sha256: 'not-hex', size: 1, arch: 'x86_64', time: 'x' }) + '\n')
  await appendFile(history, '{"name":"img","sha256":"' + 'c'.repeat(20))
  t.same(await store.history('img'), [e1])
})

t.test('names lists published names sorted, skipping entries that are not image names', async (t) => {
  const store = new ImageStore(t.testdir())
  t.same(await store.names(), [], 'no store yet: no names')
  for (const n of ['zeta', 'CPE-base', 'alpha']) await store.moveName(n, { sha256: 'a'.repeat(64), size: 1, arch: 'x86_64' })
  await mkdir(join(store.dir, 'names', '.hidden'))
  t.same(await store.names(), ['CPE-base', 'alpha', 'zeta'])
})

t.test('an unsafe name is refused before any path is built from it', async (t) => {
  const store = new ImageStore(t.testdir())
  for (const bad of ['../etc', 'a/b', '', '.']) {
    await t.rejects(store.moveName(bad, { sha256: 'a'.repeat(64), size: 1, arch: 'x86_64' }), { code: 'ECONFIG' }, JSON.stringify(bad))
    await t.rejects(store.current(bad), { code: 'ECONFIG' })
  }
  t.equal(await exists(join(store.dir, 'etc')), false)
})

t.test('lookups by something that is not a sha256 answer undefined without touching the disk', async (t) => {
  const store = new ImageStore(t.testdir())
  t.equal(await store.objectRecord('../../etc/passwd'), undefined)
  t.equal(await store.manifestText('ABC'), undefined)
  t.equal(await store.manifestText('a'.repeat(64)), undefined, 'a valid digest with nothing stored')
  t.equal(await store.drift('a'.repeat(64)), undefined, 'no record: no drift to report')
})

t.test('writeManifest stores the text served by digest, replacing an older one whole', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = imageBytes(200_000, 7)
  await writeFile(join(dir, 'img'), bytes)
  const m = await buildManifest(join(dir, 'img'), { name: 'img', urls: ['http://h/x'], workers: 0 })
  await store.writeManifest(m, serializeManifest(m) + '\n')
  t.same(parseManifest(JSON.parse((await store.manifestText(m.sha256)) ?? '')), m)
  const m2 = { ...m, urls: ['http://mirror/x'] }
  await store.writeManifest(m2, serializeManifest(m2) + '\n')
  t.same(parseManifest(JSON.parse((await store.manifestText(m.sha256)) ?? '')).urls, ['http://mirror/x'])
  await t.rejects(store.writeManifest({ ...m, sha256: 'nope' }, '{}'), { code: 'EMANIFEST' })
})

t.test('drift reports an object removed behind the store\'s back as missing', async (t) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  await writeFile(join(dir, 'img'), imageBytes(10_000, 8))
  const { sha256: digest } = await store.storeObject(join(dir, 'img'), { arch: 'x86_64' })
  await rm(store.objectPath(digest))
  t.match(await store.drift(digest), { sha256: digest, found: 'missing' })
})

t.test('a name locked by another live process is moved only once that process lets go', async (t) => {
  const store = new ImageStore(t.testdir())
  await store.init()
  const nameDir = join(store.dir, 'names', 'img')
  await mkdir(nameDir, { recursive: true })
  const holder = lockHolder(t)
  t.equal(await holder(`go ${join(nameDir, '.lock')}`), 'won')
  let moved = false
  const move = store.moveName('img', { sha256: 'a'.repeat(64), size: 1, arch: 'x86_64' }).then((e) => {
    moved = true
    return e
  })
  // Bounded: the publisher must still be waiting for the holder after several of its polls.
  t.equal(await waitFor(() => moved || exists(join(nameDir, 'current.json')).then((x) => x || undefined), 400), undefined, 'not moved while locked')
  t.equal(await holder('release'), 'released')
  t.match(await move, { sha256: 'a'.repeat(64) })
  t.equal((await store.current('img'))?.sha256, 'a'.repeat(64))
})

t.test('a name lock left by a killed publisher is taken over, not waited on', async (t) => {
  const store = new ImageStore(t.testdir())
  const nameDir = join(store.dir, 'names', 'img')
  await mkdir(nameDir, { recursive: true })
  const child = spawn(process.execPath, [...process.execArgv, new URL('../helpers/lock-racer.ts', import.meta.url).pathname])
  t.teardown(() => void child.kill('SIGKILL'))
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  child.stdin.write(`go ${join(nameDir, '.lock')}\n`)
  t.equal((await lines.next()).value, 'won')
  const exited = new Promise((r) => child.on('exit', r))
  child.kill('SIGKILL')
  await exited
  const started = Date.now()
  t.match(await store.moveName('img', { sha256: 'b'.repeat(64), size: 2, arch: 'x86_64' }), { sha256: 'b'.repeat(64) })
  t.ok(Date.now() - started < 10_000, 'well within the 30 s a live holder is waited for')
})

t.test('concurrent moves of one name through separate store objects never interleave', async (t) => {
  const dir = t.testdir()
  const digests = ['1', '2', '3', '4', '5', '6'].map((c) => c.repeat(64))
  await Promise.all(digests.map((d) => new ImageStore(dir).moveName('busy', { sha256: d, size: 1, arch: 'x86_64' })))
  const store = new ImageStore(dir)
  const history = await store.history('busy')
  t.same(history.map((h) => h.sha256).sort(), [...digests].sort(), 'every move is in the history once')
  t.equal(history[0]?.previous, undefined)
  history.slice(1).forEach((h, i) => t.equal(h.previous, history[i]?.sha256))
  t.same(await store.current('busy'), history.at(-1))
})

// On a real, tiny file system (issue #22, kin of finding 1): a name's history is
// appended whole or not at all, so a move that failed for want of space leaves
// no torn line for the next one to be glued onto; an image that does not fit
// is not stored under its digest.
const digest = (c: string): string => c.repeat(64)

t.test('a name move that runs out of space leaves the history whole; the next move is kept', gate('root'), async (t) => {
  const fs = await tinyFs(t, 64 * 1024, 'store')
  const store = new ImageStore(fs.dir)
  await store.init()
  await store.moveName('img', { sha256: digest('a'), size: 1, arch: 'x86_64' })
  // Pad the history (blank lines are skipped) to just under a page: the next entry needs a page more than is left.
  const history = join(fs.dir, 'names', 'img', 'history.jsonl')
  const text = await readFile(history, 'utf8')
  await writeFile(history, text + '\n'.repeat(PAGE_BYTES - 100 - text.length))
  await fs.fill(PAGE_BYTES) // room for the name's lock file, not for the history's next page
  await t.rejects(store.moveName('img', { sha256: digest('b'), size: 1, arch: 'x86_64' }), { code: 'ENOSPC' })
  t.ok((await readFile(history, 'utf8')).endsWith('\n'), 'no torn line left in the history')
  t.same((await store.history('img')).map((h) => h.sha256), [digest('a')])
  await fs.free()
  await store.moveName('img', { sha256: digest('c'), size: 1, arch: 'x86_64' })
  t.same((await store.history('img')).map((h) => h.sha256), [digest('a'), digest('c')], 'the next move is in the history')
  t.equal((await store.current('img'))?.sha256, digest('c'), 'and is current')
})

t.test('an image that does not fit is not stored under its digest, not even in part', gate('root'), async (t) => {
  const fs = await tinyFs(t, 256 * 1024, 'store')
  const store = new ImageStore(fs.dir)
  await store.init()
  const bytes = imageBytes(40 * 1024, 7)
  const src = join(t.testdir(), 'image.img')
  await writeFile(src, bytes)
  await fs.fill(3 * PAGE_BYTES)
  await t.rejects(store.storeObject(src, { arch: 'x86_64' }), { code: 'ENOSPC' })
  t.same(await readdir(join(fs.dir, 'objects')), [], 'no object under any digest')
  t.same(await readdir(join(fs.dir, 'tmp')), [], 'no temp file left')
  await fs.free()
  t.match(await store.storeObject(src, { arch: 'x86_64' }), { sha256: sha256(bytes), size: bytes.length, created: true })
  t.same(await readFile(store.objectPath(sha256(bytes))), bytes)
})
