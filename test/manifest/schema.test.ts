import t from 'tap'
import { IntegrityError, ManifestError, SignatureError, SizeError } from '../../agent/core/errors.js'
import { parseManifest, MAX_CHUNKS } from '../../agent/manifest/schema.js'
import { serializeManifest, type WireManifest } from '../../agent/manifest/serialize.js'
import { generateKeyPair, signManifest } from '../../agent/manifest/sign.js'

const H = (c: string): string => c.repeat(64)

/** A small valid wire manifest: 3 chunks, tiny chunking parameters. */
const valid = (): WireManifest => ({
  schema: 1,
  name: 'CPE-base',
  format: 'squashfs',
  created: '2026-11-21T12:00:00.000Z',
  size: 900,
  sha256: H('a'),
  chunking: { algorithm: 'fastcdc-gear-v1', minSize: 64, avgSize: 256, maxSize: 1024 },
  urls: ['http://head.example/images/cpe.sqfs', 'https://mirror.example/cpe.sqfs'],
  chunks: [
    [0, 500, H('1')],
    [500, 300, H('2')],
    [800, 100, H('3')],
  ],
})

/** Deep copy with a mutation applied. Malformed JSON is made by editing untyped JSON: `any` is the honest type here. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const mutate = (f: (w: Record<string, any>) => void): unknown => {
  const w = JSON.parse(JSON.stringify(valid())) as Record<string, any>
  f(w)
  return w
}

t.test('a valid manifest parses into the typed form', async (t) => {
  const m = parseManifest(valid())
  t.equal(m.size, 900)
  t.same(m.chunks[1], { index: 1, offset: 500, size: 300, sha256: H('2') })
  t.same(m.chunking, valid().chunking)
  t.equal(m.signature, undefined)
  t.equal(serializeManifest(m), JSON.stringify(valid()), 'round trip to the same canonical text')
})

t.test('xxh64Segments is optional, read when present, and written back in its canonical place', async (t) => {
  t.equal(parseManifest(valid()).xxh64Segments, undefined, 'a manifest from before the field still parses')
  const w = { ...valid(), xxh64Segments: ['0123456789abcdef'] }
  const m = parseManifest(w)
  t.same(m.xxh64Segments, ['0123456789abcdef'])
  t.equal(serializeManifest(m), JSON.stringify(w), 'after chunks, before signature')
})

t.test('the signature covers xxh64Segments: changed, added or removed after signing, it is refused', async (t) => {
  const kp = generateKeyPair()
  const signed = JSON.parse(serializeManifest(signManifest(parseManifest({ ...valid(), xxh64Segments: ['0123456789abcdef'] }), kp.privateKeyPem))) as Record<string, unknown>
  t.same(parseManifest(signed, { publicKey: kp.publicKeyPem }).xxh64Segments, ['0123456789abcdef'], 'as signed: accepted')
  for (const [what, edit] of [
    ['changed', { ...signed, xxh64Segments: ['fedcba9876543210'] }],
    ['removed', (({ xxh64Segments: _drop, ...rest }) => rest)(signed)],
  ] as const) {
    t.throws(() => parseManifest(edit, { publicKey: kp.publicKeyPem }), { code: 'ESIGNATURE' }, what)
  }
  const plain = JSON.parse(serializeManifest(signManifest(parseManifest(valid()), kp.privateKeyPem))) as Record<string, unknown>
  t.throws(() => parseManifest({ ...plain, xxh64Segments: ['0123456789abcdef'] }, { publicKey: kp.publicKeyPem }), { code: 'ESIGNATURE' }, 'added')
})

t.test('JSON text and UTF-8 bytes are accepted as input', async (t) => {
  t.equal(parseManifest(JSON.stringify(valid())).sha256, H('a'))
  t.equal(parseManifest(Buffer.from(JSON.stringify(valid()))).sha256, H('a'))
})

// JSON.parse keeps the last of two equal keys; jq, Python or an administrator reading the
// file may take the first: one manifest, two images. A duplicated key is refused, naming it.
t.test('a key given twice in one object is refused, naming the key and its object', async (t) => {
  const text = JSON.stringify(valid())
  const twice = text.replace('"sha256":', `"sha256":"${H('b')}","sha256":`)
  t.equal(JSON.parse(twice).sha256, H('a'), 'JSON.parse alone would take the last one silently')
  t.throws(() => parseManifest(twice), { code: 'EMANIFEST', field: '$', message: /key "sha256" twice/ })
  const inChunking = text.replace('"minSize":64', '"minSize":64,"minSize":65')
  t.throws(() => parseManifest(Buffer.from(inChunking)), { code: 'EMANIFEST', field: '$.chunking', message: /key "minSize" twice/ })
  const spaced = text.replace('"name":"CPE-base"', '"name" : "CPE-base" , "n\u0061me" : "other"')
  t.throws(() => parseManifest(spaced), { code: 'EMANIFEST', message: /key "name" twice/ }, 'an escaped spelling of the same key is the same key')
  const inString = text.replace('"name":"CPE-base"', `"name":${JSON.stringify('x":{"name":')}`)
  t.throws(() => parseManifest(inString), { code: 'EMANIFEST', field: '$.name' }, 'a key-like string inside a value is not a key (refused only for its name)')
  t.equal(parseManifest(text).sha256, H('a'), 'each key once: accepted')
  // A regular-expression scan overflowed V8's stack on a string this long (RangeError, no field named).
  const longName = text.replace('"name":"CPE-base"', `"name":"${'x'.repeat(50_000_000)}"`)
  t.throws(() => parseManifest(longName), { code: 'EMANIFEST', field: '$.name' }, 'a 50 MB string value: the schema names it, the key scan copes')
})

// Each malformed manifest → ManifestError (EMANIFEST) naming the JSON path of the problem.
const malformed: [string, unknown, string, RegExp?][] = [
  ['text that is not JSON', '{"schema":1,', '$', /not JSON/],
  ['a JSON array instead of an object', [], '$', /must be an object/],
  ['an unknown schema version', mutate((w) => (w.schema = 2)), '$.schema', /unsupported schema version 2/],
  ['a missing schema', mutate((w) => delete w.schema), '$.schema', /missing/],
  ['a missing sha256', mutate((w) => delete w.sha256), '$.sha256', /missing/],
  ['an unknown top-level field', mutate((w) => (w.extra = true)), '$.extra', /unknown field/],
  ['size as a string', mutate((w) => (w.size = '900')), '$.size', /must be a number/],
  ['a negative size', mutate((w) => (w.size = -900)), '$.size', /at least 1/],
  ['a fractional size', mutate((w) => (w.size = 900.5)), '$.size', /integer/],
  ['a size above 2^53', mutate((w) => (w.size = 2 ** 60)), '$.size', /absurdly large/],
  ['a short image digest', mutate((w) => (w.sha256 = 'abc')), '$.sha256', /64 hex digits/],
  ['an upper-case image digest', mutate((w) => (w.sha256 = H('A'))), '$.sha256', /lower case/],
  ['a non-hex chunk digest', mutate((w) => (w.chunks[1][2] = H('g'))), '$.chunks[1][2]', /64 hex digits/],
  ['overlapping chunks', mutate((w) => (w.chunks[1] = [499, 301, H('2')])), '$.chunks[1][0]', /overlapping/],
  ['a gap between chunks', mutate((w) => (w.chunks[1] = [501, 299, H('2')])), '$.chunks[1][0]', /gap/],
  ['chunks out of order', mutate((w) => (w.chunks = [w.chunks[1], w.chunks[0], w.chunks[2]])), '$.chunks[0][0]', /gap/],
  ['chunks that do not add up to size', mutate((w) => (w.size = 1000)), '$.chunks', /cover 900 bytes but size is 1000/],
  ['a chunk past the end', mutate((w) => (w.size = 850)), '$.chunks[2][1]', /past the image size/],
  ['a chunk larger than maxSize', mutate((w) => ((w.size = 2000), (w.chunks[2] = [800, 1200, H('3')]))), '$.chunks[2][1]', /above chunking.maxSize/],
  ['a middle chunk below minSize', mutate((w) => ((w.chunks[0] = [0, 760, H('1')]), (w.chunks[1] = [760, 40, H('2')]))), '$.chunks[1][1]', /below chunking.minSize/],
  ['a zero-size chunk', mutate((w) => ((w.size = 800), (w.chunks[2] = [800, 0, H('3')]))), '$.chunks[2][1]', /at least 1/],
  ['a chunk as an object', mutate((w) => (w.chunks[0] = { offset: 0, size: 500, sha256: H('1') })), '$.chunks[0]', /\[offset, size, sha256\]/],
  ['no chunks', mutate((w) => (w.chunks = [])), '$.chunks', /at least one chunk/],
  ['too many chunks for the size', mutate((w) => (w.chunks = Array.from({ length: 20 }, (_, i) => [i * 45, 45, H('1')]))), '$.chunks', /too many/],
  ['an unknown chunking algorithm', mutate((w) => (w.chunking.algorithm = 'rabin-v9')), '$.chunking.algorithm', /unknown chunking algorithm/],
  ['an avgSize that is not a power of two', mutate((w) => (w.chunking.avgSize = 300)), '$.chunking.avgSize', /power of two/],
  ['minSize above avgSize', mutate((w) => (w.chunking.minSize = 512)), '$.chunking.minSize', /between/],
  ['an extra chunking field', mutate((w) => (w.chunking.window = 48)), '$.chunking.window', /unknown field/],
  ['an empty url list', mutate((w) => (w.urls = [])), '$.urls', /at least one URL/],
  ['a file: URL', mutate((w) => (w.urls[1] = 'file:///etc/shadow')), '$.urls[1]', /http or https/],
  ['an ftp URL', mutate((w) => (w.urls[0] = 'ftp://head.example/x')), '$.urls[0]', /http or https/],
  ['a URL with credentials', mutate((w) => (w.urls[0] = 'https://admin:secret@head.example/x')), '$.urls[0]', /credentials/],
  ['a URL that is not a string', mutate((w) => (w.urls[0] = 42)), '$.urls[0]', /must be a string/],
  ['a duplicated URL', mutate((w) => (w.urls[1] = w.urls[0])), '$.urls[1]', /duplicates/],
  ['a URL with a space', mutate((w) => (w.urls[0] = 'http://head.example/a b')), '$.urls[0]', /spaces/],
  ['a name with a slash', mutate((w) => (w.name = 'a/b')), '$.name', /path separator/],
  ['a name with ..', mutate((w) => (w.name = '..')), '$.name', /"\.\."/],
  ['a name with a control character', mutate((w) => (w.name = 'cpe\nbase')), '$.name', /control characters/],
  ['an empty name', mutate((w) => (w.name = '')), '$.name', /empty/],
  ['a format that is not a token', mutate((w) => (w.format = 'Squash FS')), '$.format', /token/],
  ['a created time that is not ISO-8601', mutate((w) => (w.created = 'yesterday')), '$.created', /ISO-8601/],
  ['xxh64Segments that is not a list', mutate((w) => (w.xxh64Segments = '0123456789abcdef')), '$.xxh64Segments', /must be an array of 1 xxh64/],
  ['too many xxh64Segments for the size', mutate((w) => (w.xxh64Segments = ['0123456789abcdef', '0123456789abcdef'])), '$.xxh64Segments', /has 2 digest\(s\), expected 1 \(one per 64 MiB segment of 900 bytes\)/],
  ['no xxh64Segments digest for a non-empty image', mutate((w) => (w.xxh64Segments = [])), '$.xxh64Segments', /has 0 digest\(s\), expected 1/],
  ['a short xxh64 segment digest', mutate((w) => (w.xxh64Segments = ['0123456789abcde'])), '$.xxh64Segments[0]', /16 hex digits/],
  ['an upper-case xxh64 segment digest', mutate((w) => (w.xxh64Segments = ['0123456789ABCDEF'])), '$.xxh64Segments[0]', /lower case/],
  ['an xxh64 segment digest that is not a string', mutate((w) => (w.xxh64Segments = [42])), '$.xxh64Segments[0]', /must be a string/],
  ['a signature with another algorithm', mutate((w) => (w.signature = { algorithm: 'rsa', keyId: H('b'), value: 'AA==' })), '$.signature.algorithm', /ed25519/],
  ['a signature value that is not 64 bytes of base64', mutate((w) => (w.signature = { algorithm: 'ed25519', keyId: H('b'), value: 'AAAA' })), '$.signature.value', /64 bytes/],
]

for (const [what, input, field, msg] of malformed) {
  t.test(`a manifest with ${what} is refused naming ${field}`, async (t) => {
    const err = t.throws(() => parseManifest(input)) as ManifestError
    t.type(err, ManifestError)
    t.equal(err.code, 'EMANIFEST')
    t.equal(err.field, field)
    if (msg) t.match(err.message, msg)
  })
}

t.test('relative URLs are resolved against the manifest URL', async (t) => {
  const w = mutate((w) => (w.urls = ['cpe.sqfs', '../blobs/cpe.sqfs', 'https://mirror.example/cpe.sqfs']))
  const m = parseManifest(w, { baseUrl: 'http://head.example:8080/v1/images/cpe/manifest' })
  t.same(m.urls, [
    'http://head.example:8080/v1/images/cpe/cpe.sqfs',
    'http://head.example:8080/v1/images/blobs/cpe.sqfs',
    'https://mirror.example/cpe.sqfs',
  ])
  t.same(parseManifest(w).urls[0], 'cpe.sqfs', 'without baseUrl they stay as written')
  const bad = t.throws(() => parseManifest(mutate((w) => (w.urls = ['x'])), { baseUrl: 'file:///srv/manifest.json' })) as ManifestError
  t.equal(bad.field, '$.urls[0]', 'resolving against a file: base gives a file: URL, refused')
  t.throws(() => parseManifest(valid(), { baseUrl: 'not a url' }), { code: 'ECONFIG' })
})

t.test('a signed manifest verifies with its key and keeps its signature', async (t) => {
  const { publicKeyPem, privateKeyPem } = generateKeyPair()
  const signed = signManifest(parseManifest(valid()), privateKeyPem)
  const m = parseManifest(serializeManifest(signed), { publicKey: publicKeyPem })
  t.same(m.signature, signed.signature)
})

t.test('the signature covers relative URLs as written, then they are resolved', async (t) => {
  const { publicKeyPem, privateKeyPem } = generateKeyPair()
  const signed = signManifest(parseManifest(mutate((w) => (w.urls = ['cpe.sqfs']))), privateKeyPem)
  const m = parseManifest(serializeManifest(signed), { publicKey: publicKeyPem, baseUrl: 'http://h/v1/images/x/manifest' })
  t.same(m.urls, ['http://h/v1/images/x/cpe.sqfs'])
})

t.test('with a public key, an unsigned manifest is refused with ESIGNATURE', async (t) => {
  const { publicKeyPem } = generateKeyPair()
  const err = t.throws(() => parseManifest(valid(), { publicKey: publicKeyPem })) as SignatureError
  t.type(err, SignatureError)
  t.equal(err.code, 'ESIGNATURE')
  t.equal(err.context.reason, 'unsigned')
})

t.test('requireSignature without a key refuses an unsigned manifest', async (t) => {
  t.throws(() => parseManifest(valid(), { requireSignature: true }), { code: 'ESIGNATURE' })
})

t.test('a manifest altered after signing is refused with ESIGNATURE', async (t) => {
  const { publicKeyPem, privateKeyPem } = generateKeyPair()
  const signed = JSON.parse(serializeManifest(signManifest(parseManifest(valid()), privateKeyPem))) as WireManifest
  signed.urls[0] = 'http://evil.example/cpe.sqfs'
  const err = t.throws(() => parseManifest(signed, { publicKey: publicKeyPem })) as SignatureError
  t.equal(err.code, 'ESIGNATURE')
  t.equal(err.context.reason, 'bad-signature')
})

t.test('the chunk limit is large enough for a 256 GiB image at 64 KiB chunks', async (t) => {
  t.ok(MAX_CHUNKS * 64 * 1024 >= 256 * 2 ** 30)
})

t.test('pinned: the manifest must describe the pinned image, checked last, naming who pinned it', async (t) => {
  const url = 'http://head.example/v1/images/cpe/manifest'
  const by = 'the boot descriptor'
  t.equal(parseManifest(valid(), { baseUrl: url, pinned: { sha256: H('a'), size: 900, by } }).sha256, H('a'), 'the pinned image passes')
  const digest = t.throws(() => parseManifest(valid(), { baseUrl: url, pinned: { sha256: H('f'), size: 900, by } })) as IntegrityError
  t.type(digest, IntegrityError)
  t.match(digest, { code: 'EINTEGRITY', expected: H('f'), found: H('a'), url, message: `manifest (against the boot descriptor) from ${url} failed sha256 check: expected ${H('f')}, found ${H('a')}` })
  const size = t.throws(() => parseManifest(valid(), { baseUrl: url, pinned: { sha256: H('a'), size: 901, by } })) as SizeError
  t.type(size, SizeError)
  t.match(size, { code: 'EBADSIZE', expected: 901, found: 900, message: `manifest (against the boot descriptor) from ${url} has the wrong size: expected 901 bytes, found 900` })
  t.throws(() => parseManifest(mutate((w) => (w.size = -1)), { pinned: { sha256: H('f'), size: 1, by } }), { code: 'EMANIFEST' }, 'a malformed manifest is a schema error first')
})
