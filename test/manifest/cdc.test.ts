import t from 'tap'
import { createHash, randomFillSync } from 'node:crypto'
import type { ChunkingParams } from '../../agent/manifest/types.js'
import {
  CDC_ALGORITHM,
  Chunker,
  DEFAULT_CHUNKING,
  assertChunkingParams,
  chunkSizes,
  chunkingForAverage,
  chunkingProblem,
  gearTable,
} from '../../agent/manifest/cdc.js'

/** Deterministic pseudo-random bytes (sha256 in counter mode) so failures reproduce. */
const seeded = (seed: string, bytes: number): Buffer => {
  const out = Buffer.allocUnsafe(bytes)
  for (let i = 0, k = 0; i < bytes; i += 32, k++) {
    createHash('sha256').update(`${seed}/${k}`).digest().copy(out, i)
  }
  return out
}

const ends = (sizes: number[]): number[] => {
  let e = 0
  return sizes.map((s) => (e += s))
}

const data8m = seeded('cdc-test', 8 * 1024 * 1024)

/**
 * The algorithm exactly as docs/manifest.md writes it, byte by byte and
 * unoptimised: the reference the fast streaming Chunker must equal.
 */
const referenceSizes = (data: Uint8Array, p: ChunkingParams): number[] => {
  const gear = Array.from({ length: 256 }, (_, i) => createHash('sha256').update(`${p.algorithm}/${i}`).digest().readUInt32BE(0))
  const b = Math.log2(p.avgSize)
  const mask = (n: number): number => (2 ** n - 1) * 2 ** (31 - n) // bits 30 .. 31-n
  const maskS = mask(b + 2)
  const maskL = mask(b - 2)
  const sizes: number[] = []
  let start = 0
  while (start < data.length) {
    let len = data.length - start
    let h = 0
    for (let r = p.minSize; ; r++) {
      if (r === p.maxSize) {
        len = p.maxSize
        break
      }
      if (start + r >= data.length) break
      h = Number((BigInt(h) * 2n + BigInt(gear[data[start + r]!]!)) % 2n ** 32n)
      const m = r < p.avgSize ? maskS : maskL
      if ((BigInt(h) & BigInt(m)) === 0n) {
        len = r + 1
        break
      }
    }
    sizes.push(Math.min(len, data.length - start))
    start += len
  }
  return sizes
}

t.test('the gear table is derived from the algorithm id as documented', async (t) => {
  const g = gearTable(CDC_ALGORITHM)
  t.equal(g.length, 256)
  for (const i of [0, 1, 127, 255]) {
    t.equal(g[i], createHash('sha256').update(`fastcdc-gear-v1/${i}`).digest().readInt32BE(0), `entry ${i}`)
  }
  t.equal(new Set(g).size, 256, 'no two entries equal')
  t.not(gearTable('another-id')[0], g[0], 'another id gives another table')
})

t.test('the fast chunker equals the documented byte-by-byte algorithm', async (t) => {
  const small = chunkingForAverage(1024)
  const data = seeded('reference', 256 * 1024)
  t.same(chunkSizes(data, small), referenceSizes(data, small), 'avg 1 KiB')
  const odd = { algorithm: CDC_ALGORITHM, minSize: 100, avgSize: 512, maxSize: 3000 }
  t.same(chunkSizes(data, odd), referenceSizes(data, odd), 'odd min/max')
  const big = data8m.subarray(0, 1536 * 1024)
  t.same(chunkSizes(big, DEFAULT_CHUNKING), referenceSizes(big, DEFAULT_CHUNKING), 'defaults')
  const zeros = Buffer.alloc(70000)
  t.same(chunkSizes(zeros, small), referenceSizes(zeros, small), 'a constant run')
})

t.test('cuts are the same however the input is split into buffers', async (t) => {
  const whole = chunkSizes(data8m)
  t.ok(whole.length > 50, `${whole.length} chunks`)
  const rnd = seeded('splits', 4096)
  for (const [label, pieceOf] of [
    ['1-byte then 4 MiB pieces', (i: number) => (i < 300 ? 1 : 4 * 1024 * 1024)],
    ['odd 777-byte pieces', () => 777],
    ['random 1..70000-byte pieces', (i: number) => 1 + (rnd.readUInt32BE((i * 4) % 4092) % 70000)],
    ['pieces of exactly minSize', () => DEFAULT_CHUNKING.minSize],
  ] as const) {
    const c = new Chunker()
    const got: number[] = []
    for (let off = 0, i = 0; off < data8m.length; i++) {
      const n = Math.min(pieceOf(i), data8m.length - off)
      got.push(...c.push(data8m.subarray(off, off + n)))
      off += n
    }
    got.push(...c.end())
    t.same(got, ends(whole), label)
  }
})

t.test('every chunk respects min and max; only the last may be short', async (t) => {
  const sizes = chunkSizes(data8m)
  const { minSize, maxSize } = DEFAULT_CHUNKING
  t.equal(sizes.reduce((a, b) => a + b, 0), data8m.length, 'chunks add up to the input')
  t.ok(sizes.slice(0, -1).every((s) => s > minSize && s <= maxSize), 'all but the last within (min, max]')
  t.ok(sizes.at(-1)! >= 1 && sizes.at(-1)! <= maxSize, 'last within [1, max]')
  const avg = data8m.length / sizes.length
  t.ok(avg > 40 * 1024 && avg < 100 * 1024, `average ${Math.round(avg)} near 64 KiB`)
})

t.test('input without any cut point is cut at maxSize', async (t) => {
  // A constant run makes the hash constant: either it cuts right after minSize
  // or never; for this byte it never does (checked), so every chunk is maxSize.
  const p = { ...DEFAULT_CHUNKING }
  const sizes = chunkSizes(Buffer.alloc(p.maxSize * 3 + 5, 0), p)
  t.same(sizes, [p.maxSize, p.maxSize, p.maxSize, 5])
})

t.test('a few bytes inserted in the middle change only the chunks around them', async (t) => {
  const before = chunkSizes(data8m)
  const mid = 4 * 1024 * 1024 + 12345
  const edited = Buffer.concat([data8m.subarray(0, mid), Buffer.from('hello!'), data8m.subarray(mid)])
  const after = chunkSizes(edited)
  const digests = (buf: Buffer, sizes: number[]): Set<string> => {
    const s = new Set<string>()
    let off = 0
    for (const n of sizes) {
      s.add(createHash('sha256').update(buf.subarray(off, off + n)).digest('hex'))
      off += n
    }
    return s
  }
  const old = digests(data8m, before)
  const changed = [...digests(edited, after)].filter((d) => !old.has(d)).length
  t.ok(changed >= 1 && changed <= 3, `${changed} new chunks of ${after.length}`)
})

t.test('random data gives the same cuts on every run (no hidden state)', async (t) => {
  const buf = Buffer.allocUnsafe(1024 * 1024)
  randomFillSync(buf)
  t.same(chunkSizes(buf), chunkSizes(Buffer.from(buf)))
})

t.test('bad chunking parameters are refused naming the parameter', async (t) => {
  const ok = { ...DEFAULT_CHUNKING }
  t.equal(chunkingProblem(ok), undefined)
  const cases: [Partial<typeof ok>, string][] = [
    [{ algorithm: 'rabin' }, 'algorithm'],
    [{ avgSize: 60000 }, 'avgSize'],
    [{ avgSize: 128 }, 'avgSize'],
    [{ minSize: 32 }, 'minSize'],
    [{ minSize: 128 * 1024 }, 'minSize'],
    [{ maxSize: 32 * 1024 }, 'maxSize'],
    [{ maxSize: 2 ** 31 }, 'maxSize'],
    [{ minSize: 1.5 }, 'minSize'],
    [{ avgSize: -1 }, 'avgSize'],
  ]
  for (const [patch, field] of cases) {
    t.equal(chunkingProblem({ ...ok, ...patch })?.field, field, JSON.stringify(patch))
  }
  t.throws(() => new Chunker({ ...ok, avgSize: 1000 }), /chunking\.avgSize/)
  t.throws(() => assertChunkingParams({ ...ok, algorithm: 'x' }), /unknown chunking algorithm/)
  t.same(chunkingForAverage(1024 * 1024), { algorithm: CDC_ALGORITHM, minSize: 256 * 1024, avgSize: 1024 * 1024, maxSize: 4 * 1024 * 1024 })
  t.throws(() => chunkingForAverage(3000), /power of two/)
})

t.test('push after end is an error, end twice returns nothing', async (t) => {
  const c = new Chunker()
  c.push(Buffer.alloc(10))
  t.same(c.end(), [10])
  t.same(c.end(), [])
  t.throws(() => c.push(Buffer.alloc(1)))
})

t.test('empty input has no chunks', async (t) => {
  t.same(chunkSizes(Buffer.alloc(0)), [])
})

t.test('fixed test vectors: the cut points are part of the format and must never drift', async (t) => {
  // Also printed in docs/manifest.md so other implementations can check themselves.
  // Input: bytes k*32..k*32+31 = sha256("fastcdc-gear-v1 test vector/" + k).
  t.same(chunkSizes(seeded('fastcdc-gear-v1 test vector', 65536), chunkingForAverage(4096)), [
    4141, 4837, 6135, 5464, 5318, 5310, 3891, 3006, 1364, 3460, 5113, 4146, 4603, 4239, 4509,
  ])
  t.same(chunkSizes(seeded('fastcdc-gear-v1 test vector', 1 << 20)), [
    71679, 77127, 65802, 105749, 102057, 37536, 75216, 74792, 80712, 75800, 69990, 65704, 78987, 67425,
  ])
})
