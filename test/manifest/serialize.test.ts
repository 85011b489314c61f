import t from 'tap'
import { parseManifest } from '../../agent/manifest/schema.js'
import { canonicalBytes, serializeManifest, toWire, WIRE_KEYS } from '../../agent/manifest/serialize.js'
import type { Manifest } from '../../agent/manifest/types.js'

const H = (c: string): string => c.repeat(64)

const manifest = (): Manifest => ({
  schema: 1,
  name: 'CPE-base',
  format: 'squashfs',
  created: '2026-11-21T12:00:00.000Z',
  size: 900,
  sha256: H('a'),
  chunking: { algorithm: 'fastcdc-gear-v1', minSize: 64, avgSize: 256, maxSize: 1024 },
  urls: ['http://head.example/cpe.sqfs'],
  chunks: [
    { index: 0, offset: 0, size: 500, sha256: H('1') },
    { index: 1, offset: 500, size: 400, sha256: H('2') },
  ],
})

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
  t.same(Object.keys(JSON.parse(text) as object), WIRE_KEYS.filter((k) => k !== 'signature'))
  t.same(Object.keys((JSON.parse(text) as { chunking: object }).chunking), ['algorithm', 'minSize', 'avgSize', 'maxSize'])
  t.notMatch(text, /\s/, 'no whitespace anywhere')
})

t.test('chunks are written compactly as [offset, size, sha256], without their index', async (t) => {
  const text = serializeManifest(manifest())
  t.ok(text.includes(`"chunks":[[0,500,"${H('1')}"],[500,400,"${H('2')}"]]`))
})

t.test('a signature is written last, its keys in order; the signed bytes leave it out', async (t) => {
  const signed = { ...manifest(), signature: { value: 'c2ln', keyId: 'k1', algorithm: 'ed25519' as const } }
  const text = serializeManifest(signed)
  t.same(Object.keys(JSON.parse(text) as object), [...WIRE_KEYS])
  t.ok(text.endsWith(`"signature":{"algorithm":"ed25519","keyId":"k1","value":"c2ln"}}`))
  t.equal(canonicalBytes(signed).toString('utf8'), serializeManifest(manifest()))
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
  t.equal(m.chunking.avgSize, 256)
})
