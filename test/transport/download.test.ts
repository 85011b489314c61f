/**
 * The download's own job (agent/transport/download.ts): the queue of range
 * requests, the mirrors and the retries, around the rooms it uses (chunk
 * writing, disk, digests, the cache's reserve). A real HTTP server on
 * loopback (node:http, answering Range requests as nginx does; a mirror
 * can be told to fail or to serve one chunk wrong), a real cache and
 * partial file.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PartialObject } from '../../agent/cache/partial.js'
import { Cache } from '../../agent/cache/store.js'
import { CacheFullError, IntegrityError } from '../../agent/core/errors.js'
import { silentLogger } from '../../agent/core/log.js'
import type { Manifest } from '../../agent/manifest/types.js'
import { Download, type DownloadOptions } from '../../agent/transport/download.js'
import { DEFAULT_RETRY_POLICY } from '../../agent/core/retry.js'
import { manifestFor, seededBytes, sha256Hex } from '../helpers/image.js'

const KiB = 1024
const FAST_RETRY = { ...DEFAULT_RETRY_POLICY, baseDelayMs: 1, maxDelayMs: 5 }

interface Mirror {
  url: string
  /** Ranges asked for, as "start-end". */
  asked: string[]
}

/** A mirror serving `data`: `status` answers every request with that status; `spoilAt` flips the byte there. */
const mirror = async (t: Test, data: Buffer, opts: { status?: number; spoilAt?: number } = {}): Promise<Mirror> => {
  const served = Buffer.from(data)
  if (opts.spoilAt !== undefined) served[opts.spoilAt] = served[opts.spoilAt]! ^ 1
  const asked: string[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
    asked.push(m ? `${m[1]}-${m[2]}` : 'all')
    if (opts.status) {
      res.writeHead(opts.status, { 'content-length': '0' })
      return res.end()
    }
    if (!m) {
      res.writeHead(200, { 'content-length': String(served.length) })
      return res.end(served)
    }
    const start = Number(m[1])
    const end = Math.min(Number(m[2]), served.length - 1)
    res.writeHead(206, { 'content-length': String(end - start + 1), 'content-range': `bytes ${start}-${end}/${served.length}` })
    res.end(served.subarray(start, end + 1))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/img`, asked }
}

const setup = async (t: Test, size = 700 * KiB) => {
  const data = seededBytes(size, t.name)
  const m: Manifest = manifestFor(data, [])
  const cache = await Cache.open(join(t.testdir(), 'cache'))
  const run = async (urls: string[], extra: Partial<DownloadOptions> = {}) => {
    const partial = await PartialObject.open(cache, m, { log: silentLogger() })
    try {
      const r = await new Download({ manifest: m, cache, partial, urls, log: silentLogger(), retry: FAST_RETRY, random: () => 0.5, ...extra }).run()
      return { r, bytes: await readFile(partial.path), partial }
    } finally {
      await partial.close()
    }
  }
  return { data, m, cache, run }
}

t.test('the missing chunks come in merged range requests, verified, with the whole-image digests', async (t) => {
  const { data, m, cache, run } = await setup(t)
  const a = await mirror(t, data)
  const reserved: unknown[] = []
  const reserve = cache.reserve.bind(cache)
  cache.reserve = (bytes, opts) => (reserved.push([bytes, opts]), reserve(bytes, opts))
  const { r, bytes } = await run([a.url], { maxRangeBytes: 256 * KiB, pin: ['b'.repeat(64)] })
  t.same(bytes, data, 'the partial file is the image')
  t.equal(r.sha256, sha256Hex(data))
  t.equal(r.bytesDownloaded, data.length)
  t.equal(r.requests, a.asked.length)
  t.ok(a.asked.length >= 3 && a.asked.length < m.chunks.length, `${a.asked.length} ranges of at most 256 KiB for ${m.chunks.length} chunks`)
  t.same(reserved, [[data.length, { pinned: [m.sha256, 'b'.repeat(64)] }]], 'the cache was asked once for the missing bytes, this image pinned')
})

t.test('one stream asks for a long run of missing chunks in one request: no pipeline drain every 16 MiB', async (t) => {
  const { data, m, run } = await setup(t, 40 * 1024 * KiB)
  const a = await mirror(t, data)
  const { r, bytes } = await run([a.url])
  t.same(a.asked, [`0-${data.length - 1}`], 'the whole 40 MiB image in one Range request')
  t.equal(r.sha256, m.sha256)
  t.ok(bytes.equals(data))
})

t.test('a mirror with a final error is dropped and the next one serves', async (t) => {
  const { data, run } = await setup(t)
  const gone = await mirror(t, data, { status: 404 })
  const good = await mirror(t, data)
  const { r, bytes } = await run([gone.url, good.url])
  t.same(bytes, data)
  t.equal(gone.asked.length, 1, 'the dead mirror was asked once')
  t.equal(r.requests, 1 + good.asked.length)
})

t.test('a chunk one mirror serves wrong is fetched from the other; wrong from every mirror, it is an IntegrityError', async (t) => {
  const { data, m, run } = await setup(t)
  const bad = m.chunks[2]!
  const liar = await mirror(t, data, { spoilAt: bad.offset + 10 })
  const honest = await mirror(t, data)
  const { bytes } = await run([liar.url, honest.url])
  t.same(bytes, data, 'the good copy of the chunk was kept')
  t.ok(honest.asked.some((r) => r === `${bad.offset}-${bad.offset + bad.size - 1}`), 'the honest mirror was asked for that chunk only')

  const { run: again } = await setup(t)
  const liar2 = await mirror(t, data, { spoilAt: bad.offset + 10 })
  const e = await again([liar2.url]).catch((x: unknown) => x)
  t.type(e, IntegrityError)
  t.match(e, { code: 'EINTEGRITY', expected: bad.sha256, url: liar2.url, message: /chunk 2 \(bytes/ })
})

t.test('no room in the cache: CacheFullError before any request', async (t) => {
  const { data, cache, run } = await setup(t)
  const a = await mirror(t, data)
  cache.freeBytes = async () => 1000
  await t.rejects(run([a.url]), CacheFullError)
  t.same(a.asked, [], 'nothing was asked of the mirror')
})

t.test('nothing missing: no request, and the digests are read back from the partial file', async (t) => {
  const { data, run } = await setup(t)
  const a = await mirror(t, data)
  await run([a.url])
  const asked = a.asked.length
  const { r } = await run([a.url])
  t.equal(a.asked.length, asked, 'no new request')
  t.equal(r.sha256, sha256Hex(data))
  t.equal(r.bytesDownloaded, 0)
})
