import t from 'tap'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { command as publish } from '../../agent/cli/publish.js'
import { generateKeyPair, parseManifest, verifyManifestSignature } from '../../agent/manifest/index.js'
import { silentLogger } from '../../agent/core/log.js'
import { ImageStore } from '../../agent/head/store.js'
import { imageBytes, sha256 } from '../helpers/head-fixtures.js'

const run = async (argv: string[]): Promise<{ code: number; out: string[] }> => {
  const out: string[] = []
  const code = await publish.run(argv, { log: silentLogger(), out: (l) => out.push(l), signal: new AbortController().signal })
  return { code, out }
}

t.test('publish stores the image under its digest, writes its manifest and points the name at it', async (t) => {
  const dir = t.testdir()
  const img = join(dir, 'v1.sqfs')
  const v1 = imageBytes(300_000, 7)
  await writeFile(img, v1)
  const { code, out } = await run([img, '--name', 'CPE-base', '--store', join(dir, 'store'), '--arch', 'x86_64'])
  t.equal(code, 0)
  const res = JSON.parse(out[0] ?? '{}') as Record<string, unknown>
  t.match(res, { name: 'CPE-base', sha256: sha256(v1), size: v1.length, previous: null, stored: true, signed: false })
  const store = new ImageStore(join(dir, 'store'))
  const obj = store.objectPath(sha256(v1))
  t.equal(obj, join(dir, 'store', 'objects', 'sha256', sha256(v1).slice(0, 2), sha256(v1).slice(2)))
  t.ok((await readFile(obj)).equals(v1))
  t.equal((await stat(obj)).mode & 0o777, 0o444, 'stored bytes are read-only')
  const m = parseManifest(JSON.parse(await readFile(store.manifestPath(sha256(v1)), 'utf8')))
  t.match(m, { name: 'CPE-base', sha256: sha256(v1), size: v1.length, urls: [`/v1/images/by-digest/${sha256(v1)}/image`] })
  t.equal(m.xxh64Segments?.length, 1, 'the manifest carries the segment xxh64 a cache hit is checked against')
  t.match(await store.current('CPE-base'), { sha256: sha256(v1), arch: 'x86_64' })
})

t.test('publishing a new version moves the name, keeps history, and never touches the old bytes', async (t) => {
  const dir = t.testdir()
  const storeDir = join(dir, 'store')
  const v1 = imageBytes(200_000, 1)
  const v2 = imageBytes(200_000, 2)
  await writeFile(join(dir, 'a'), v1)
  await writeFile(join(dir, 'b'), v2)
  await run([join(dir, 'a'), '--name', 'CPE-base', '--store', storeDir])
  const store = new ImageStore(storeDir)
  const before = await stat(store.objectPath(sha256(v1)))
  const { out } = await run([join(dir, 'b'), '--name', 'CPE-base', '--store', storeDir])
  t.match(JSON.parse(out[0] ?? '{}'), { sha256: sha256(v2), previous: sha256(v1) })
  const after = await stat(store.objectPath(sha256(v1)))
  t.same([after.ino, after.mtimeMs, after.size], [before.ino, before.mtimeMs, before.size], 'v1 object untouched')
  t.ok((await readFile(store.objectPath(sha256(v1)))).equals(v1))
  t.same((await store.history('CPE-base')).map((h) => h.sha256), [sha256(v1), sha256(v2)])
  t.equal((await store.current('CPE-base'))?.sha256, sha256(v2))
  // Publishing v1 again moves the name back without storing anything.
  const again = await run([join(dir, 'a'), '--name', 'CPE-base', '--store', storeDir])
  t.match(JSON.parse(again.out[0] ?? '{}'), { sha256: sha256(v1), stored: false, previous: sha256(v2) })
  t.same((await store.history('CPE-base')).map((h) => h.sha256), [sha256(v1), sha256(v2), sha256(v1)])
  t.equal(await store.drift(sha256(v1)), undefined)
})

t.test('a store object overwritten in place is noticed, and the next publish replaces it by rename, not in place', async (t) => {
  const dir = t.testdir()
  const storeDir = join(dir, 'store')
  const v1 = imageBytes(100_000, 3)
  await writeFile(join(dir, 'a'), v1)
  await run([join(dir, 'a'), '--name', 'img', '--store', storeDir])
  const store = new ImageStore(storeDir)
  const obj = store.objectPath(sha256(v1))
  const { chmod } = await import('node:fs/promises')
  await chmod(obj, 0o644)
  await writeFile(obj, imageBytes(100_000, 4))
  t.match(await store.drift(sha256(v1)), { sha256: sha256(v1) })
  await run([join(dir, 'a'), '--name', 'img', '--store', storeDir])
  t.ok((await readFile(obj)).equals(v1), 'good bytes are back under the digest')
  t.equal(await store.drift(sha256(v1)), undefined)
})

t.test('--sign writes a manifest that verifies with the public key', async (t) => {
  const dir = t.testdir()
  const keys = generateKeyPair()
  await writeFile(join(dir, 'key.pem'), keys.privateKeyPem)
  await writeFile(join(dir, 'img'), imageBytes(50_000, 5))
  const { out } = await run([join(dir, 'img'), '--name', 'signed', '--store', join(dir, 'store'), '--sign', join(dir, 'key.pem'), '--url', 'https://s3.example/b/signed.sqfs'])
  const res = JSON.parse(out[0] ?? '{}') as { sha256: string; signed: boolean; manifest: string }
  t.equal(res.signed, true)
  const m = parseManifest(JSON.parse(await readFile(res.manifest, 'utf8')))
  t.same(m.urls, ['https://s3.example/b/signed.sqfs'], 'mirrors replace the head\'s own endpoint')
  t.doesNotThrow(() => verifyManifestSignature(m, keys.publicKeyPem))
})

t.test('bad publish arguments are refused with the option named', async (t) => {
  const dir = t.testdir({ img: 'x' })
  await t.rejects(run([join(dir, 'img'), '--name', '../etc', '--store', dir]), { code: 'ECONFIG', key: '--name' })
  await t.rejects(run([join(dir, 'img'), '--name', 'a/b', '--store', dir]), { code: 'ECONFIG' })
  await t.rejects(run([join(dir, 'img'), '--store', dir]), { code: 'ECONFIG', key: '--name' })
  await t.rejects(run([join(dir, 'img'), '--name', 'x', '--store', dir, '--arch', 'm68k']), { code: 'ECONFIG', key: '--arch' })
  await t.rejects(run([join(dir, 'img'), '--name', 'x', '--store', dir, '--url', 'ftp://x/y']), { code: 'ECONFIG', key: '--url' })
  await t.rejects(run([join(dir, 'missing'), '--name', 'x', '--store', join(dir, 's')]), { code: 'ECONFIG', key: 'IMAGE' })
  const store = new ImageStore(join(dir, 's'))
  t.same(await store.names(), [], 'nothing published by a failed publish')
})

t.test('concurrent publishes of one name are serialised: the history ends with the digest the name points at', async (t) => {
  const dir = t.testdir()
  const storeDir = join(dir, 'store')
  const versions = [1, 2, 3, 4].map((seed) => imageBytes(60_000, 100 + seed))
  await Promise.all(versions.map((v, i) => writeFile(join(dir, `v${i}`), v)))
  await Promise.all(versions.map((_, i) => run([join(dir, `v${i}`), '--name', 'busy', '--store', storeDir])))
  const store = new ImageStore(storeDir)
  const history = await store.history('busy')
  t.equal(history.length, 4)
  t.equal(history.at(-1)?.sha256, (await store.current('busy'))?.sha256)
  // Each entry's `previous` is the entry before it: no two moves interleaved.
  history.slice(1).forEach((h, i) => t.equal(h.previous, history[i]?.sha256))
})
