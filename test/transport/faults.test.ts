import t, { type Test } from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { HttpError } from '../../agent/core/errors.js'
import type { Manifest } from '../../agent/manifest/types.js'
import { fetchImage, type FetchImageOptions } from '../../agent/transport/fetch-image.js'
import { orderMirrors } from '../../agent/transport/mirrors.js'
import { DEFAULT_RETRY_POLICY } from '../../agent/core/retry.js'
import { gate } from '../helpers/capability.js'
import { startFaultProxy, type Fault, type FaultProxy } from '../helpers/fault-proxy.js'
import { manifestFor, writeImage } from '../helpers/image.js'
import { freePort, startNginx } from '../helpers/nginx.js'

const MiB = 1024 * 1024
const FAST_RETRY = { ...DEFAULT_RETRY_POLICY, baseDelayMs: 5, maxDelayMs: 50 }

interface Setup {
  data: Buffer
  m: Manifest
  cache: Cache
  proxy: FaultProxy
  fetch(extra?: Partial<FetchImageOptions>): ReturnType<typeof fetchImage>
}

const setup = async (t: Test, script: Fault[], always?: Fault, size = 2 * MiB): Promise<Setup> => {
  const dir = t.testdir({ www: {} })
  const data = await writeImage(join(dir, 'www', 'img.sqfs'), size, t.name)
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const proxy = await startFaultProxy(ng.url, script, always)
  t.teardown(() => proxy.stop())
  const cache = await Cache.open(join(dir, 'cache'))
  const m = manifestFor(data, [`${proxy.url}/img.sqfs`])
  return { data, m, cache, proxy, fetch: (extra = {}) => fetchImage({ manifest: m, cache, retry: FAST_RETRY, streams: 1, ...extra }) }
}

const assertVerified = async (t: Test, s: Setup, path: string) => {
  t.same(await readFile(path), s.data, 'the published object is exactly the image')
  t.equal((await s.cache.verify(s.m.sha256, { mode: 'strong' })).ok, true)
}

t.test('a 500 then success gives a verified object after one retry', gate('nginx'), async (t) => {
  const s = await setup(t, [{ kind: 'status', status: 500 }])
  const r = await s.fetch()
  await assertVerified(t, s, r.path)
  t.same(s.proxy.requests.map((q) => q.status), [500, 206])
})

t.test('a 404 is not retried and publishes nothing', gate('nginx'), async (t) => {
  const s = await setup(t, [], { kind: 'status', status: 404 })
  const e = await s.fetch().catch((x: unknown) => x)
  t.type(e, HttpError)
  t.equal((e as HttpError).status, 404)
  t.equal(s.proxy.requests.length, 1, 'one request only')
  t.equal((await s.cache.lookup(s.m.sha256)).status, 'miss')
})

for (const kind of ['truncate', 'reset'] as const) {
  t.test(`a response cut (${kind}) in the middle of a chunk is resumed from that chunk's start`, gate('nginx'), async (t) => {
    const cut = 700 * 1024 + 123
    const s = await setup(t, [{ kind, afterBytes: cut }])
    const r = await s.fetch()
    await assertVerified(t, s, r.path)
    t.equal(s.proxy.requests.length, 2)
    const inChunk = s.m.chunks.find((c) => c.offset <= cut && cut < c.offset + c.size)!
    const retryFrom = Number(/^bytes=(\d+)-/.exec(s.proxy.requests[1]!.range)?.[1])
    t.comment(`cut at ${cut}, retry from ${retryFrom}, downloaded ${r.bytesDownloaded}`)
    if (kind === 'truncate') {
      t.equal(retryFrom, inChunk.offset, 'the retry starts at the chunk that was cut')
      t.ok(r.bytesDownloaded <= s.data.length + inChunk.size, 'at most one chunk fetched twice')
    } else {
      // A reset discards what was in flight, so the client may have less than the proxy sent.
      t.ok(s.m.chunks.some((c) => c.offset === retryFrom) && retryFrom <= inChunk.offset, 'the retry starts at a chunk boundary at or before the cut')
      t.ok(r.bytesDownloaded - (s.data.length - retryFrom) <= cut, 'the first response delivered no more than was sent')
    }
  })
}

t.test('a server that ignores Range is read as one stream of the whole file', gate('nginx'), async (t) => {
  const s = await setup(t, [], { kind: 'ignore-range' })
  const r = await s.fetch({ streams: 4, maxRangeBytes: 256 * 1024 })
  await assertVerified(t, s, r.path)
  t.equal(s.proxy.requests.length, 1, 'the probe answer (200, whole file) served every chunk')
  t.equal(s.proxy.requests[0]!.status, 200)
  t.equal(r.bytesDownloaded, s.data.length)
})

t.test('a Range-ignoring server after a cut resumes by streaming again and skipping verified chunks', gate('nginx'), async (t) => {
  const s = await setup(t, [{ kind: 'truncate', afterBytes: MiB }], { kind: 'ignore-range' })
  s.proxy.script[0] = { kind: 'truncate', afterBytes: MiB } // the first answer is cut too
  const r = await s.fetch()
  await assertVerified(t, s, r.path)
  t.ok(s.proxy.requests.length >= 2)
})

t.test('one mirror down: the other serves the image', gate('nginx'), async (t) => {
  const s = await setup(t, [])
  const down = `http://127.0.0.1:${await freePort()}/img.sqfs`
  const urls = [down, s.m.urls[0]!]
  // A node whose order puts the dead mirror first.
  let node = 'n0'
  for (let i = 0; orderMirrors(urls, node)[0] !== down && i < 100; i++) node = `n${i}`
  t.equal(orderMirrors(urls, node)[0], down)
  const r = await fetchImage({ manifest: { ...s.m, urls }, cache: s.cache, retry: FAST_RETRY, nodeId: node })
  await assertVerified(t, s, r.path)
})

t.test('a server that stalls is given up on after the idle timeout and retried', gate('nginx'), async (t) => {
  const s = await setup(t, [{ kind: 'stall', afterBytes: 300 * 1024 }])
  const r = await s.fetch({ idleTimeoutMs: 300 })
  await assertVerified(t, s, r.path)
  t.equal(s.proxy.requests.length, 2)
})

t.test('a server that always cuts responses gives a clear error, keeps verified chunks for resume and publishes nothing', gate('nginx'), async (t) => {
  // One answer gets 1 MiB through, then every answer is cut before a chunk completes.
  const s = await setup(t, [{ kind: 'truncate', afterBytes: MiB }], { kind: 'truncate', afterBytes: 8 * 1024 })
  const e = await s.fetch({ retry: { ...FAST_RETRY, maxAttempts: 3 } }).catch((x: unknown) => x)
  t.ok(e instanceof Error)
  t.comment(`error: ${(e as Error).message}`)
  t.match((e as { code?: string }).code, /^(ECONNRESET|ETRUNCATED|ENETWORK|ERR_STREAM_PREMATURE_CLOSE)$/)
  t.equal((await s.cache.lookup(s.m.sha256)).status, 'miss', 'nothing published')
  const state = JSON.parse(await readFile(s.cache.statePath(s.m.sha256), 'utf8')) as { verified: number[] }
  t.ok(state.verified.length > 0, 'verified chunks recorded')
  // The server recovers: the rerun fetches only what is missing.
  s.proxy.always = { kind: 'pass' }
  const before = s.proxy.requests.length
  const r = await s.fetch()
  await assertVerified(t, s, r.path)
  t.equal(r.bytesResumed, state.verified.reduce((n, i) => n + s.m.chunks[i]!.size, 0))
  t.equal(r.bytesDownloaded, s.data.length - r.bytesResumed)
  t.ok(s.proxy.requests.length > before)
})
