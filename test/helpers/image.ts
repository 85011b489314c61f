/**
 * Test images and manifests. The manifests here use a simple seeded
 * variable-size chunking (any contiguous chunking is a valid manifest); the
 * CDC chunker of agent/manifest is what real publishers use.
 */
import { createHash, randomBytes } from 'node:crypto'
import { open, readFile, writeFile } from 'node:fs/promises'
import type { Chunk, Manifest } from '../../agent/manifest/types.js'
import { seededRandom } from '../../agent/transport/mirrors.js'

/** `size` pseudo-random bytes from `seed` (fast: a repeated random block, xor-ed by position). */
export const seededBytes = (size: number, seed: string): Buffer => {
  const rnd = seededRandom(seed)
  const out = Buffer.allocUnsafe(size)
  for (let i = 0; i + 4 <= size; i += 4) out.writeUInt32LE(Math.floor(rnd() * 4294967296), i)
  for (let i = size - (size % 4); i < size; i++) out[i] = Math.floor(rnd() * 256)
  return out
}

export const sha256Hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Chunks of sizes in [min, max] (seeded), covering `data`. */
export const chunkBytes = (data: Uint8Array, opts: { min?: number; max?: number; seed?: string } = {}): Chunk[] => {
  const min = opts.min ?? 16 * 1024
  const max = opts.max ?? 96 * 1024
  const rnd = seededRandom(opts.seed ?? 'chunks')
  const chunks: Chunk[] = []
  let at = 0
  while (at < data.length) {
    const size = Math.min(data.length - at, min + Math.floor(rnd() * (max - min + 1)))
    chunks.push({ index: chunks.length, offset: at, size, sha256: sha256Hex(data.subarray(at, at + size)) })
    at += size
  }
  return chunks
}

export const manifestFor = (data: Uint8Array, urls: string[], opts: { name?: string; min?: number; max?: number; seed?: string; chunks?: Chunk[] } = {}): Manifest => ({
  schema: 1,
  name: opts.name ?? 'test-image',
  format: 'squashfs',
  created: new Date(0).toISOString(),
  size: data.length,
  sha256: sha256Hex(data),
  chunking: { algorithm: 'fastcdc-gear-v1', minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024 },
  chunks: opts.chunks ?? chunkBytes(data, opts),
  urls,
})

/** Writes a seeded image to `path` and returns its bytes. */
export const writeImage = async (path: string, size: number, seed: string): Promise<Buffer> => {
  const data = seededBytes(size, seed)
  await writeFile(path, data)
  return data
}

export const randomImage = (size: number): Buffer => randomBytes(size)

export const fileSha256 = async (path: string): Promise<string> => sha256Hex(await readFile(path))

/**
 * A large image that costs little disk: a sparse file of `size` bytes with
 * seeded pseudo-random 1 MiB blocks at its start, its end, the middle of
 * every `stride` bytes and across every `stride` boundary (so that each
 * stride-sized piece, e.g. each 64 MiB xxh64 segment, has its own content).
 */
export const writeSparseImage = async (path: string, size: number, stride: number, seed: string): Promise<void> => {
  const BLOCK = 1024 * 1024
  const fh = await open(path, 'w')
  try {
    await fh.truncate(size)
    const at = new Set<number>([0, Math.max(0, size - BLOCK)])
    for (let s = 0; s < size; s += stride) {
      at.add(s + stride / 2 - BLOCK / 2)
      at.add(s + stride - BLOCK / 2)
    }
    let k = 0
    for (const off of [...at].sort((a, b) => a - b)) {
      if (off < 0 || off >= size) continue
      const len = Math.min(BLOCK, size - off)
      await fh.write(seededBytes(len, `${seed}:${k++}`), 0, len, off)
    }
  } finally {
    await fh.close()
  }
}

/** Flips bits of the byte at `at` in the file (XOR `mask`): the same call again restores it. */
export const flipByte = async (path: string, at: number, mask = 1): Promise<void> => {
  const fh = await open(path, 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, at)
    b[0] = b[0]! ^ mask
    await fh.write(b, 0, 1, at)
  } finally {
    await fh.close()
  }
}
