/**
 * Delta update: with image v1 cached, fetching v2 (the same tree with a few
 * files changed, rebuilt by real mksquashfs with reproducible options and
 * cut by the real CDC chunker) downloads only the chunks v1 lacks, in merged
 * Range requests, and copies the rest from v1's object.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdir, readFile, writeFile, appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { buildManifest } from '../../agent/manifest/build.js'
import { fetchImage } from '../../agent/transport/fetch-image.js'
import { planRanges } from '../../agent/transport/plan.js'
import { seededRandom } from '../../agent/transport/mirrors.js'
import { gate } from '../helpers/capability.js'
import { seededBytes, sha256Hex } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'

const WORDS = 'node image cache chunk verify boot kernel squashfs delta manifest range mirror retry digest sha256 cluster'.split(' ')

/** A tree of text-like (compressible) and binary files, seeded. */
const makeTree = async (root: string, seed: string) => {
  const rnd = seededRandom(seed)
  for (let d = 0; d < 8; d++) {
    await mkdir(join(root, `d${d}`), { recursive: true })
    for (let f = 0; f < 25; f++) {
      const path = join(root, `d${d}`, `f${f}.txt`)
      if (f % 5 === 0) {
        await writeFile(path, seededBytes(20_000 + Math.floor(rnd() * 200_000), `${seed}-${d}-${f}`))
      } else {
        const lines: string[] = []
        const n = 200 + Math.floor(rnd() * 2000)
        for (let i = 0; i < n; i++) lines.push(Array.from({ length: 8 }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(' ') + ` ${i}`)
        await writeFile(path, lines.join('\n'))
      }
    }
  }
}

const squash = (src: string, out: string) =>
  execFileSync('mksquashfs', [src, out, '-noappend', '-mkfs-time', '0', '-all-time', '0', '-all-root', '-no-progress', '-quiet'], { stdio: 'ignore' })

t.test('with v1 cached, v2 downloads only the chunks v1 lacks, in merged Range requests', gate('nginx', 'squashfs-tools'), async (t) => {
  const dir = t.testdir({ www: {}, tree: {} })
  const tree = join(dir, 'tree')
  await makeTree(tree, 'delta')
  const www = join(dir, 'www')
  squash(tree, join(www, 'v1.sqfs'))
  // A few files changed: one appended to, one overwritten in the middle, one added.
  await appendFile(join(tree, 'd3', 'f7.txt'), '\nappended line\n')
  const mid = join(tree, 'd5', 'f10.txt')
  const b = await readFile(mid)
  b.fill(0x41, 4000, 8000)
  await writeFile(mid, b)
  await writeFile(join(tree, 'd1', 'new.bin'), seededBytes(100_000, 'new-file'))
  squash(tree, join(www, 'v2.sqfs'))

  const ng = await startNginx(www)
  t.teardown(() => ng.stop())
  const v1 = await buildManifest(join(www, 'v1.sqfs'), { name: 'img-v1', urls: [`${ng.url}/v1.sqfs`], workers: 0 })
  const v2 = await buildManifest(join(www, 'v2.sqfs'), { name: 'img-v2', urls: [`${ng.url}/v2.sqfs`], workers: 0 })
  t.not(v1.sha256, v2.sha256)
  const cache = await Cache.open(join(dir, 'cache'))
  await fetchImage({ manifest: v1, cache })
  await ng.clearAccess()

  const have = new Set(v1.chunks.map((c) => c.sha256))
  const lacking = v2.chunks.filter((c) => !have.has(c.sha256)).map((c) => c.index)
  const lackingBytes = lacking.reduce((n, i) => n + v2.chunks[i]!.size, 0)
  const runs = planRanges(v2.chunks, lacking, 16 * 1024 * 1024)
  const r = await fetchImage({ manifest: v2, cache })
  const log = (await ng.access()).filter((a) => a.path === '/v2.sqfs')
  t.equal(sha256Hex(await readFile(r.path)), v2.sha256, 'v2 verified')
  t.equal(r.bytesDownloaded, lackingBytes, 'downloaded exactly the chunks v1 lacks')
  t.equal(log.reduce((n, a) => n + a.bytes, 0), lackingBytes, 'nginx sent exactly those bytes')
  t.equal(r.bytesReused, v2.size - lackingBytes, 'the rest was copied from v1')
  t.equal(log.length, runs.length, `one request per run of consecutive missing chunks (${lacking.length} chunks in ${runs.length} requests)`)
  t.ok(runs.length < lacking.length, 'runs were merged')
  t.same(log.map((a) => a.range).sort(), runs.map((x) => `bytes=${x.start}-${x.end - 1}`).sort())
  t.ok(lackingBytes < v2.size * 0.25, `delta is small: ${lackingBytes} of ${v2.size} bytes (${((100 * lackingBytes) / v2.size).toFixed(2)} %)`)
})
