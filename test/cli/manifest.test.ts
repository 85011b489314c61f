import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseManifest } from '../../agent/manifest/schema.js'
import { type WireManifest } from '../../agent/manifest/serialize.js'
import { keyIdOf } from '../../agent/manifest/sign.js'
import { parseChunkSize } from '../../agent/cli/manifest.js'
import { runCli } from '../helpers/run-cli.js'

const seeded = (seed: string, bytes: number): Buffer => {
  const out = Buffer.allocUnsafe(bytes)
  for (let i = 0, k = 0; i < bytes; i += 32, k++) createHash('sha256').update(`${seed}/${k}`).digest().copy(out, i)
  return out
}

/** A directory with an image file and a signing key pair made by the CLI. */
const setup = (t: Test): { dir: string; image: string; key: string; pub: string } => {
  const dir = t.testdir() as string
  const image = join(dir, 'cpe.sqfs')
  writeFileSync(image, seeded('cli', 3 * 1024 * 1024 + 99))
  const r = runCli(['keygen', '--out', join(dir, 'site')])
  if (r.status !== 0) throw new Error(r.stderr)
  return { dir, image, key: join(dir, 'site.key'), pub: join(dir, 'site.pub') }
}

t.test('manifest prints a valid manifest whose digest equals sha256sum', async (t) => {
  const { image } = setup(t)
  const r = runCli(['manifest', image, '--name', 'CPE-base', '--url', 'http://head.example/cpe.sqfs', '--url', 'https://mirror.example/cpe.sqfs'])
  t.equal(r.status, 0, r.stderr)
  const m = parseManifest(r.stdout)
  t.equal(m.sha256, execFileSync('sha256sum', [image], { encoding: 'utf8' }).split(' ')[0])
  t.equal(m.name, 'CPE-base')
  t.same(m.urls, ['http://head.example/cpe.sqfs', 'https://mirror.example/cpe.sqfs'])
  t.equal(m.chunking.avgSize, 64 * 1024)
})

t.test('a large image goes through the hash workers inside the bundle and comes out exact', async (t) => {
  const dir = t.testdir()
  const image = join(dir, 'large.img')
  const data = seeded('large', 12 * 1024 * 1024 + 5)
  writeFileSync(image, data)
  const r = runCli(['manifest', image])
  t.equal(r.status, 0, r.stderr)
  const m = parseManifest(r.stdout)
  t.equal(m.sha256, execFileSync('sha256sum', [image], { encoding: 'utf8' }).split(' ')[0])
  const wrong = m.chunks.filter((c) => c.sha256 !== createHash('sha256').update(data.subarray(c.offset, c.offset + c.size)).digest('hex'))
  t.equal(wrong.length, 0, `all ${m.chunks.length} chunk digests right`)
})

t.test('defaults: name and a relative URL from the image file name', async (t) => {
  const { image } = setup(t)
  const r = runCli(['manifest', image])
  t.equal(r.status, 0, r.stderr)
  const w = JSON.parse(r.stdout) as WireManifest
  t.equal(w.name, 'cpe.sqfs')
  t.same(w.urls, ['cpe.sqfs'])
  t.same(parseManifest(w, { baseUrl: 'http://h/images/cpe.manifest.json' }).urls, ['http://h/images/cpe.sqfs'])
})

t.test('--chunk-size sets avg with min avg/4 and max avg*4', async (t) => {
  const { image } = setup(t)
  const r = runCli(['manifest', image, '--chunk-size', '16K'])
  t.equal(r.status, 0, r.stderr)
  const m = parseManifest(r.stdout)
  t.same(m.chunking, { algorithm: 'fastcdc-gear-v1', minSize: 4096, avgSize: 16384, maxSize: 65536 })
  t.ok(m.chunks.length > 100, `${m.chunks.length} chunks`)
  t.equal(parseChunkSize('1M'), 1024 * 1024)
  t.equal(parseChunkSize('65536'), 65536)
  t.equal(parseChunkSize('64KiB'), 65536)
})

t.test('sign round trip: keygen, manifest --sign --out, then --check with the public key', async (t) => {
  const { dir, image, key, pub } = setup(t)
  const out = join(dir, 'cpe.manifest.json')
  const r = runCli(['manifest', image, '--sign', key, '--out', out, '--json'])
  t.equal(r.status, 0, r.stderr)
  const s = JSON.parse(r.stdout) as { file: string; signed: string; sha256: string; xxh64Segments: number }
  t.equal(s.file, out)
  t.equal(s.xxh64Segments, 1, 'the segment digests written (one 64 MiB segment)')
  t.equal(s.signed, keyIdOf(readFileSync(pub, 'utf8')))
  const m = parseManifest(readFileSync(out, 'utf8'), { publicKey: readFileSync(pub, 'utf8') })
  t.equal(m.sha256, s.sha256)
  const c = runCli(['manifest', '--check', out, '--pubkey', pub])
  t.equal(c.status, 0, c.stderr)
  t.match(c.stdout, /signature verified/)
  t.match(c.stdout, /1 xxh64 segment\(s\)/)
  const without = join(dir, 'old.manifest.json')
  t.equal(runCli(['manifest', image, '--without-segments', '--out', without]).status, 0)
  t.equal(parseManifest(readFileSync(without, 'utf8')).xxh64Segments, undefined, '--without-segments: for nodes older than the field')
  t.match(runCli(['manifest', '--check', without]).stdout, /no xxh64Segments/)
})

t.test('--check with a public key refuses unsigned, other-key and tampered manifests', async (t) => {
  const { dir, image, key, pub } = setup(t)
  const unsigned = join(dir, 'unsigned.json')
  t.equal(runCli(['manifest', image, '--out', unsigned]).status, 0)
  const r1 = runCli(['manifest', '--check', unsigned, '--pubkey', pub])
  t.equal(r1.status, 1)
  t.match(r1.stderr, /not signed/)

  const otherPrefix = join(dir, 'other')
  t.equal(runCli(['keygen', '--out', otherPrefix]).status, 0)
  const other = join(dir, 'other.json')
  t.equal(runCli(['manifest', image, '--sign', `${otherPrefix}.key`, '--out', other]).status, 0)
  const r2 = runCli(['manifest', '--check', other, '--pubkey', pub])
  t.equal(r2.status, 1)
  t.match(r2.stderr, /signed by key/)

  const signed = join(dir, 'signed.json')
  t.equal(runCli(['manifest', image, '--sign', key, '--out', signed]).status, 0)
  const w = JSON.parse(readFileSync(signed, 'utf8')) as WireManifest
  w.chunks[0]![2] = '0'.repeat(64)
  const tampered = join(dir, 'tampered.json')
  writeFileSync(tampered, JSON.stringify(w))
  const r3 = runCli(['manifest', '--check', tampered, '--pubkey', pub])
  t.equal(r3.status, 1)
  t.match(r3.stderr, /bad signature/)
})

t.test('malformed manifests: each --check exits 1 naming the field', async (t) => {
  const { dir, image } = setup(t)
  const good = JSON.parse(runCli(['manifest', image, '--url', 'http://h/cpe.sqfs']).stdout) as WireManifest
  // Malformed JSON is made by editing untyped JSON: `any` is the honest type here.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const cases: [string, (w: any) => unknown, string][] = [
    ['unknown schema', (w) => ((w.schema = 7), w), '$.schema'],
    ['missing size', (w) => (delete w.size, w), '$.size'],
    ['string size', (w) => ((w.size = String(w.size)), w), '$.size'],
    ['negative size', (w) => ((w.size = -1), w), '$.size'],
    ['upper-case digest', (w) => ((w.sha256 = w.sha256.toUpperCase()), w), '$.sha256'],
    ['short digest', (w) => ((w.sha256 = 'abcd'), w), '$.sha256'],
    ['overlap', (w) => ((w.chunks[1][0] -= 1), w), '$.chunks[1][0]'],
    ['gap', (w) => ((w.chunks[1][0] += 1), w), '$.chunks[1][0]'],
    ['size mismatch', (w) => ((w.size += 1), w), '$.chunks'],
    ['chunk above max', (w) => ((w.chunking.maxSize = w.chunking.avgSize), w), `$.chunks[${good.chunks.findIndex((c) => c[1] > good.chunking.avgSize)}][1]`],
    ['bad chunk digest', (w) => ((w.chunks[2][2] = 'xyz'), w), '$.chunks[2][2]'],
    ['unknown algorithm', (w) => ((w.chunking.algorithm = 'buzhash'), w), '$.chunking.algorithm'],
    ['non-http URL', (w) => ((w.urls = ['file:///img']), w), '$.urls[0]'],
    ['credentials in URL', (w) => ((w.urls = ['http://u:p@h/img']), w), '$.urls[0]'],
    ['no URLs', (w) => ((w.urls = []), w), '$.urls'],
    ['name with a slash', (w) => ((w.name = 'x/y'), w), '$.name'],
    ['extra field', (w) => ((w.mode = 'fast'), w), '$.mode'],
    ['not JSON', () => '{"schema": 1', '$'],
  ]
  for (const [what, mutate, field] of cases) {
    const file = join(dir, `bad-${what.replace(/\W+/g, '-')}.json`)
    const v = mutate(JSON.parse(JSON.stringify(good)))
    writeFileSync(file, typeof v === 'string' ? v : JSON.stringify(v))
    const r = runCli(['manifest', '--check', file])
    t.equal(r.status, 1, `${what}: exit 1`)
    t.match(r.stderr, `manifest field ${field}:`, `${what}: names ${field}`)
  }
})

t.test('bad command lines are usage errors (exit 2) that say what is wrong', async (t) => {
  const { dir, image } = setup(t)
  const cases: [string[], RegExp][] = [
    [['manifest'], /IMAGE is required/],
    [['manifest', join(dir, 'missing.img')], /does not exist/],
    [['manifest', image, '--chunk-size', '100K'], /power of two/],
    [['manifest', image, '--chunk-size', 'big'], /not a size/],
    [['manifest', image, '--sign', join(dir, 'site.pub')], /privateKey/],
    [['manifest', image, '--sign', join(dir, 'nokey')], /cannot read/],
    [['manifest', image, '--bogus'], /bogus/],
    [['manifest', image, '--pubkey', join(dir, 'site.pub')], /only goes with --check/],
  ]
  for (const [args, msg] of cases) {
    const r = runCli(args)
    t.equal(r.status, 2, args.join(' '))
    t.match(r.stderr, msg)
  }
  const bad = runCli(['manifest', image, '--name', '../x'])
  t.equal(bad.status, 1, 'an invalid name is a manifest error')
  t.match(bad.stderr, /manifest field \$\.name/)
})

t.test('--help answers with the real usage', async (t) => {
  const r = runCli(['manifest', '--help'])
  t.equal(r.status, 0)
  t.match(r.stdout, /--chunk-size AVG/)
  t.match(r.stdout, /--sign KEYFILE/)
})
