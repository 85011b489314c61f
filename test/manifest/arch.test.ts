/**
 * A manifest says which architecture its image runs on (`arch`, issue #21),
 * and a node of another one refuses it before fetching a byte: `fetch` (the
 * bundled CLI) and the boot stage's manifest step, against a real head.
 */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { silentLogger } from '../../agent/core/log.js'
import { startHead } from '../../agent/head/server.js'
import { checkArch, machineArch } from '../../agent/manifest/arch.js'
import { parseManifest } from '../../agent/manifest/schema.js'
import { imageBytes, publishBytes, sha256 } from '../helpers/head-fixtures.js'
import { runCli, runCliAsync } from '../helpers/run-cli.js'

const other = machineArch() === 'aarch64' ? 'x86_64' : 'aarch64'

t.test('machineArch speaks uname -m; checkArch refuses another architecture and accepts a manifest without arch', async (t) => {
  t.equal(machineArch('x64'), 'x86_64')
  t.equal(machineArch('arm64'), 'aarch64')
  const m = { name: 'doc', sha256: 'ab'.repeat(32) }
  t.doesNotThrow(() => checkArch(m, 'x86_64'), 'no arch: nothing says it is wrong')
  t.doesNotThrow(() => checkArch({ ...m, arch: 'x86_64' }, 'x86_64'))
  t.throws(() => checkArch({ ...m, arch: 'aarch64' }, 'x86_64'), { code: 'EARCH', message: /built for aarch64, and this machine is x86_64.*--arch aarch64/ })
})

t.test('boot-agent manifest records arch (default this machine\'s, --arch, --without-arch); a bad one is refused at $.arch', async (t) => {
  const dir = t.testdir()
  const img = join(dir, 'img')
  await writeFile(img, imageBytes(70_000, 8))
  const out = join(dir, 'm.json')
  t.equal(runCli(['manifest', img, '--out', out]).status, 0)
  t.equal(parseManifest(await readFile(out, 'utf8')).arch, machineArch())
  t.equal(runCli(['manifest', img, '--out', out, '--arch', 'aarch64']).status, 0)
  t.equal(parseManifest(await readFile(out, 'utf8')).arch, 'aarch64')
  t.equal(runCli(['manifest', img, '--out', out, '--without-arch']).status, 0)
  const text = await readFile(out, 'utf8')
  t.equal(parseManifest(text).arch, undefined)
  t.notMatch(text, /"arch"/, 'for nodes older than the field')
  t.throws(() => parseManifest(text.replace('"chunks":', '"arch":"Bad Arch","chunks":')), { code: 'EMANIFEST', field: '$.arch' })
})

t.test('fetch and the boot stage refuse an image for another architecture before fetching it; fetch --arch takes it', async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const bytes = imageBytes(90_000, 9)
  const pub = await publishBytes(store, 'doc-other', bytes, { arch: other, dir })
  t.equal(parseManifest(await readFile(pub.manifestPath, 'utf8')).arch, other, 'publish records the arch in the manifest')
  const head = await startHead({ store, nodes: { schema: 1, defaults: {}, architectures: {}, groups: {}, nodes: {}, images: {} } })
  t.teardown(() => head.close())
  const url = `${head.url}/v1/images/doc-other/manifest`

  const refused = await runCliAsync(['fetch', url, '--cache', join(dir, 'cache'), '--json'])
  t.equal(refused.status, 1)
  t.match(JSON.parse(refused.stdout), { error: { code: 'EARCH', message: new RegExp(`built for ${other}, and this machine is ${machineArch()}`) } })
  t.equal(head.stats().imageBytes, 0, 'no image byte was served')

  const err = await cachePipeline.fetchManifest(url, { log: silentLogger(), timeoutMs: 5000, node: 'n1', pinned: { sha256: sha256(bytes), size: bytes.length, by: 'test' } }).catch((e: unknown) => e)
  t.match(err, { code: 'EARCH' }, 'the boot stage\'s manifest step refuses it too')

  const taken = await runCliAsync(['fetch', url, '--cache', join(dir, 'cache'), '--json', '--arch', other])
  t.equal(taken.status, 0, taken.stderr)
  t.match(JSON.parse(taken.stdout), { sha256: sha256(bytes), hit: false })
})
