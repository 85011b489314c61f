/**
 * The fs-verity digest computed in TypeScript equals what the real
 * `fsverity digest` (fsverity-utils) prints, which is what the kernel
 * measures of a sealed file (sha256, 4096-byte blocks, no salt).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fsverityDigestOfBytes, fsverityDigestOfFile, rootHashOf } from '../../agent/hash/fsverity.js'
import { gate } from '../helpers/capability.js'

const exec = promisify(execFile)

// Sizes at every edge of the tree: empty, one byte, one block, one block and a byte,
// level 0 exactly one block of hashes (128 blocks) and one more, two levels, and a file over a read buffer.
const SIZES = [0, 1, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 128 * 128 * 4096 + 4095, 3 * 1024 * 1024 + 17]

t.test('equal to `fsverity digest` for every size at the edges of the Merkle tree', gate('fsverity'), async (t) => {
  const dir = t.testdir()
  for (const size of SIZES) {
    const path = join(dir, `f${size}`)
    const data = randomBytes(size)
    await writeFile(path, data)
    const { stdout } = await exec('fsverity', ['digest', path])
    const want = stdout.trim().split(' ')[0]
    t.equal(`sha256:${await fsverityDigestOfFile(path)}`, want, `${size} bytes, read from the file`)
    t.equal(`sha256:${fsverityDigestOfBytes(data)}`, want, `${size} bytes, in memory`)
  }
})

t.test('one changed byte anywhere changes the digest', async (t) => {
  const data = randomBytes(200 * 4096)
  const before = fsverityDigestOfBytes(data)
  for (const at of [0, 4095, 4096, data.length - 1]) {
    const c = Buffer.from(data)
    c[at] = (c[at] ?? 0) ^ 1
    t.not(fsverityDigestOfBytes(c), before, `byte ${at}`)
  }
  t.not(fsverityDigestOfBytes(Buffer.concat([data, Buffer.alloc(1)])), before, 'a trailing zero byte counts (the size is in the descriptor)')
})

t.test('an empty file has the all-zero root hash', async (t) => {
  t.same(rootHashOf(Buffer.alloc(0)), Buffer.alloc(32))
})

t.test('boot-agent manifest writes the image fsverityDigest, equal to `fsverity digest`; --without-fsverity leaves it out; a bad one is refused', gate('fsverity'), async (t) => {
  const { buildManifest } = await import('../../agent/manifest/build.js')
  const { parseManifest } = await import('../../agent/manifest/schema.js')
  const { serializeManifest } = await import('../../agent/manifest/serialize.js')
  const image = join(t.testdir(), 'image.raw')
  await writeFile(image, randomBytes(300 * 1024 + 3))
  const m = await buildManifest(image, { name: 'img', urls: ['http://h/img'], workers: 0 })
  const { stdout } = await exec('fsverity', ['digest', image])
  t.equal(`sha256:${m.fsverityDigest}`, stdout.trim().split(' ')[0])
  t.notOk('fsverityDigest' in (await buildManifest(image, { name: 'img', urls: ['http://h/img'], workers: 0, fsverity: false })))
  const text = serializeManifest(m)
  t.equal(parseManifest(text).fsverityDigest, m.fsverityDigest, 'read back')
  t.throws(() => parseManifest(text.replace(m.fsverityDigest ?? '', 'F'.repeat(64))), { code: 'EMANIFEST', message: /\$\.fsverityDigest/ })
})
