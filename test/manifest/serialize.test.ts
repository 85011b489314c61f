import t from 'tap'
import { parseManifest } from '../../agent/manifest/schema.js'
import { canonicalBytes, serializeManifest, toWire, WIRE_KEYS } from '../../agent/manifest/serialize.js'
import type { Manifest } from '../../agent/manifest/types.js'
import { manifestFor, seededBytes } from '../helpers/image.js'

const H = (c: string): string => c.repeat(64)

/** A real manifest of a small seeded image (several chunks), made as the tests' other manifests are. */
const manifest = (): Manifest => manifestFor(seededBytes(200_000, 'serialize'), ['http://head.example/cpe.sqfs'], { name: 'CPE-base', min: 20_000, max: 60_000 })

/** The same manifest with every object's keys in reverse order (as another producer might build it). */
const reversed = (m: Manifest): Manifest => {
  const rev = (o: object): object => Object.fromEntries(Object.entries(o).reverse().map(([k, v]) => [k, Array.isArray(v) ? v.map((x: unknown) => (typeof x === 'object' && x !== null ? rev(x) : x)) : typeof v === 'object' && v !== null ? rev(v as object) : v]))
  return rev(m) as Manifest
}

/** Well-formed (not a real signature: parsing checks its form; verifying is sign.test.ts's). */
const signature = { algorithm: 'ed25519' as const, keyId: H('d'), value: Buffer.alloc(64, 7).toString('base64') }

t.test('the canonical text has the documented keys in the documented order, whatever order the input had', async (t) => {
  const text = serializeManifest(reversed(manifest()))
  t.equal(text, serializeManifest(manifest()))
  // xxh64Segments is optional: written only when present, after the chunks.
  t.same(Object.keys(JSON.parse(text) as object), WIRE_KEYS.filter((k) => k !== 'signature' && k !== 'xxh64Segments' && k !== 'arch' && k !== 'fsverityDigest'))
  const withSegments = serializeManifest(reversed({ ...manifest(), xxh64Segments: ['0123456789abcdef'] }))
  t.same(Object.keys(JSON.parse(withSegments) as object), WIRE_KEYS.filter((k) => k !== 'signature' && k !== 'arch' && k !== 'fsverityDigest'))
  // arch (issue #21) likewise: only when present, after xxh64Segments.
  const withArch = serializeManifest(reversed({ ...manifest(), xxh64Segments: ['0123456789abcdef'], arch: 'x86_64' }))
  t.same(Object.keys(JSON.parse(withArch) as object), WIRE_KEYS.filter((k) => k !== 'signature' && k !== 'fsverityDigest'))
  // fsverityDigest (issue #19) likewise, after arch.
  const withVerity = serializeManifest(reversed({ ...manifest(), xxh64Segments: ['0123456789abcdef'], arch: 'x86_64', fsverityDigest: 'f'.repeat(64) }))
  t.same(Object.keys(JSON.parse(withVerity) as object), WIRE_KEYS.filter((k) => k !== 'signature'))
  t.same(Object.keys((JSON.parse(text) as { chunking: object }).chunking), ['algorithm', 'minSize', 'avgSize', 'maxSize'])
  t.notMatch(text, /\s/, 'no whitespace anywhere')
})

t.test('chunks are written compactly as [offset, size, sha256], without their index', async (t) => {
  const m = manifest()
  t.ok(m.chunks.length > 1)
  const wire = m.chunks.map((c) => `[${c.offset},${c.size},"${c.sha256}"]`).join(',')
  t.ok(serializeManifest(m).includes(`"chunks":[${wire}]`))
})

t.test('a signature is written last, its keys in order; the signed bytes leave it out', async (t) => {
  const signed = { ...manifest(), xxh64Segments: ['0123456789abcdef'], arch: 'x86_64', fsverityDigest: 'f'.repeat(64), signature: { value: 'c2ln', keyId: 'k1', algorithm: 'ed25519' as const } }
  const text = serializeManifest(signed)
  t.same(Object.keys(JSON.parse(text) as object), [...WIRE_KEYS])
  t.ok(text.endsWith(`"signature":{"algorithm":"ed25519","keyId":"k1","value":"c2ln"}}`))
  t.equal(canonicalBytes(signed).toString('utf8'), serializeManifest({ ...manifest(), xxh64Segments: ['0123456789abcdef'], arch: 'x86_64', fsverityDigest: 'f'.repeat(64) }))
  t.notOk(toWire(signed, { withSignature: false }).signature)
})

t.test('the canonical bytes are UTF-8 of the text: a non-ASCII name is encoded, not escaped', async (t) => {
  const m = { ...manifest(), name: 'café' }
  const bytes = canonicalBytes(m)
  t.ok(bytes.includes(Buffer.from('"name":"café"', 'utf8')))
  t.equal(bytes.length, Buffer.byteLength(serializeManifest(m), 'utf8'))
})

t.test('serialise, parse, serialise gives the same bytes, signed or not', async (t) => {
  for (const m of [manifest(), { ...manifest(), signature }]) {
    const text = serializeManifest(m)
    const back = parseManifest(text)
    t.same(back, m)
    t.equal(serializeManifest(back), text)
  }
})

t.test('the wire object is a copy: changing it does not change the manifest', async (t) => {
  const m = manifest()
  const w = toWire(m)
  w.urls.push('http://other/')
  w.chunking.avgSize = 1
  t.same(m.urls, ['http://head.example/cpe.sqfs'])
  t.equal(m.chunking.avgSize, manifest().chunking.avgSize)
})
