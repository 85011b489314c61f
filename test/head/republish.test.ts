/**
 * Publishing bytes the store already holds (issue #21): one manifest file per
 * digest is served under every name pointing at it, so a re-publish must not
 * strip its signature, rename it, or add a history entry whose `previous` is
 * itself. And `publish --json`, and progress lines for a large image.
 */
import t, { type Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { command as publish } from '../../agent/cli/publish.js'
import { command as keygen } from '../../agent/cli/keygen.js'
import { silentLogger } from '../../agent/core/log.js'
import { ImageStore } from '../../agent/head/store.js'
import { parseManifest } from '../../agent/manifest/index.js'
import { imageBytes, sha256 } from '../helpers/head-fixtures.js'
import { runCli } from '../helpers/run-cli.js'

const run = async (argv: string[]): Promise<{ code: number; out: string[] }> => {
  const out: string[] = []
  const ctx = { log: silentLogger(), out: (l: string) => void out.push(l), signal: new AbortController().signal }
  const code = await publish.run(argv, ctx).catch((e: unknown) => {
    out.push(String((e as Error).message))
    return -1
  })
  return { code, out }
}

const setup = async (t: Test) => {
  const dir = t.testdir()
  const img = join(dir, 'img.sqfs')
  const bytes = imageBytes(150_000, 3)
  await writeFile(img, bytes)
  await keygen.run(['--out', join(dir, 'k')], { log: silentLogger(), out: () => {}, signal: new AbortController().signal })
  const store = join(dir, 'store')
  return { dir, img, sha: sha256(bytes), store, s: new ImageStore(store), pub: await readFile(join(dir, 'k.pub'), 'utf8'), key: join(dir, 'k.key') }
}

t.test('publishing the same image again without --sign keeps the signature nodes check', async (t) => {
  const e = await setup(t)
  t.equal((await run([e.img, '--name', 'doc', '--store', e.store, '--sign', e.key])).code, 0)
  const again = await run([e.img, '--name', 'doc', '--store', e.store])
  t.equal(again.code, 0, again.out.join('\n'))
  t.match(JSON.parse(again.out[0] ?? '{}'), { signed: true, manifestKept: true })
  const m = parseManifest(await readFile(e.s.manifestPath(e.sha), 'utf8'), { publicKey: e.pub })
  t.ok(m.signature, 'still signed, and the signature verifies')
})

t.test('with other mirrors and no --sign, a signed manifest is refused, saying to add --sign', async (t) => {
  const e = await setup(t)
  await run([e.img, '--name', 'doc', '--store', e.store, '--sign', e.key])
  const r = await run([e.img, '--name', 'doc', '--store', e.store, '--url', 'https://mirror.example/doc.sqfs'])
  t.equal(r.code, -1)
  t.match(r.out.join('\n'), /is signed.*strip that signature.*--sign KEY/)
  t.ok(parseManifest(await readFile(e.s.manifestPath(e.sha), 'utf8'), { publicKey: e.pub }).signature, 'the stored manifest is untouched')
  const resigned = await run([e.img, '--name', 'doc', '--store', e.store, '--url', 'https://mirror.example/doc.sqfs', '--sign', e.key])
  t.equal(resigned.code, 0, 'with --sign it is rewritten and signed again')
  t.same(parseManifest(await readFile(e.s.manifestPath(e.sha), 'utf8'), { publicKey: e.pub }).urls, ['https://mirror.example/doc.sqfs'])
})

t.test('the same bytes under another name leave the by-digest manifest\'s name alone; both names point at it', async (t) => {
  const e = await setup(t)
  await run([e.img, '--name', 'doc', '--store', e.store])
  t.equal((await run([e.img, '--name', 'doc-copy', '--store', e.store])).code, 0)
  t.equal(parseManifest(await readFile(e.s.manifestPath(e.sha), 'utf8')).name, 'doc', 'the first publisher\'s name')
  t.equal((await e.s.current('doc-copy'))?.sha256, e.sha)
  t.equal((await e.s.current('doc'))?.sha256, e.sha)
})

t.test('re-publishing what a name already points at adds no history entry whose previous is itself', async (t) => {
  const e = await setup(t)
  await run([e.img, '--name', 'doc', '--store', e.store])
  const again = await run([e.img, '--name', 'doc', '--store', e.store])
  t.match(JSON.parse(again.out[0] ?? '{}'), { moved: false, previous: null })
  const history = await e.s.history('doc')
  t.equal(history.length, 1)
  t.notOk(history.some((h) => h.previous === h.sha256), 'no entry points back at itself')
})

t.test('publish --json prints the JSON result', async (t) => {
  const e = await setup(t)
  const r = await run([e.img, '--name', 'doc', '--store', e.store, '--json'])
  t.equal(r.code, 0, r.out.join('\n'))
  t.match(JSON.parse(r.out[0] ?? '{}'), { name: 'doc', sha256: e.sha, stored: true })
})

t.test('a large image shows progress on standard error, throttled; standard output stays one JSON line', async (t) => {
  const dir = t.testdir()
  const img = join(dir, 'big.img')
  // 80 MiB of a repeating pattern: large enough for progress lines, quick to hash.
  await writeFile(img, Buffer.concat(Array.from({ length: 80 }, (_, i) => Buffer.alloc(1024 * 1024, i))))
  const r = runCli(['publish', img, '--name', 'big', '--store', join(dir, 'store'), '--json'])
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout.trim().split('\n').length, 1, 'one line on stdout')
  t.match(JSON.parse(r.stdout), { name: 'big', size: 80 * 1024 * 1024 })
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('publish: '))
  t.ok(lines.some((l) => /^publish: copying into the store: 100 % \(80 of 80 MiB\)$/.test(l)), lines.join('\n'))
  t.ok(lines.some((l) => /^publish: writing the manifest \(chunking, hashing\): 100 %/.test(l)), 'the manifest phase too')
  t.ok(lines.length <= 12, `throttled (${lines.length} lines)`)
})
