import t from 'tap'
import { createHash } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildManifest } from '../../agent/manifest/build.js'
import { chunkingForAverage } from '../../agent/manifest/cdc.js'
import { parseManifest } from '../../agent/manifest/schema.js'

// The example in docs/manifest.md must stay true: it parses, its signature
// verifies with the key printed next to it, and rebuilding the documented
// input gives exactly its digest and chunks.
const doc = readFileSync(fileURLToPath(new URL('../../docs/manifest.md', import.meta.url)), 'utf8')
const json = /```json\n([\s\S]*?)```/.exec(doc)?.[1]?.replace(/\n/g, '') ?? ''
const pem = /(-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----)/.exec(doc)?.[1] ?? ''

t.test('the documented example parses and its signature verifies', async (t) => {
  const m = parseManifest(json, { publicKey: pem, baseUrl: 'http://head.example/v1/images/CPE-base/manifest' })
  t.equal(m.name, 'CPE-base')
  t.same(m.urls, ['http://head.example/v1/images/CPE-base/cpe-base.sqfs', 'https://mirror.example/images/cpe-base.sqfs'])
})

t.test('rebuilding the documented input gives the documented digest and chunks', async (t) => {
  const data = Buffer.allocUnsafe(1 << 20)
  for (let i = 0, k = 0; i < data.length; i += 32, k++) createHash('sha256').update(`fastcdc-gear-v1 test vector/${k}`).digest().copy(data, i)
  const path = join(t.testdir(), 'cpe-base.sqfs')
  writeFileSync(path, data)
  const documented = parseManifest(json)
  const built = await buildManifest(path, { name: 'CPE-base', urls: ['x'], chunking: chunkingForAverage(256 * 1024) })
  t.equal(built.sha256, documented.sha256)
  t.same(built.chunks, documented.chunks)
  t.same(built.xxh64Segments, documented.xxh64Segments, 'and its segment xxh64')
})
