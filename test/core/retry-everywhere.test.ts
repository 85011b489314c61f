/**
 * One retry policy for every HTTP caller (issue 17): the boot descriptor, the
 * manifest, the image's range requests and event delivery each meet a real
 * HTTP server on loopback answering a scripted status first, and must all
 * retry the same statuses, treat the other 4xx as final, and wait what the
 * server's Retry-After says. Their waits are recorded through the injected
 * sleep, so nothing here waits.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fetchDescriptor } from '../../agent/boot/descriptor.js'
import { Cache } from '../../agent/cache/store.js'
import type { Sleep } from '../../agent/core/clock.js'
import { DEFAULT_RETRY_POLICY } from '../../agent/core/retry.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { MAX_BACKOFF_MS, Sender } from '../../agent/events/sender.js'
import { Spool } from '../../agent/events/spool.js'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { fetchImage, fetchManifest } from '../../agent/transport/fetch-image.js'
import { manifestFor, seededBytes } from '../helpers/image.js'

const RETRIED = [408, 425, 429, 500, 502, 503, 504]
const FINAL = [401, 403, 404, 410]

/** What the server answers first on a path: a status, with a Retry-After when given. */
interface Scripted {
  status: number
  retryAfter?: string
}

/** A real HTTP server: each path answers its scripted statuses first, then its real answer. */
const startServer = async (t: Test) => {
  const scripts = new Map<string, Scripted[]>()
  const seen = new Map<string, number>()
  const real = new Map<string, (req: IncomingMessage, res: ServerResponse, body: string) => void>()
  const srv = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? ''
    let body = ''
    req.setEncoding('utf8').on('data', (d: string) => (body += d))
    req.on('end', () => {
      seen.set(path, (seen.get(path) ?? 0) + 1)
      const next = scripts.get(path)?.shift()
      if (next) {
        res.writeHead(next.status, { 'content-type': 'text/plain', ...(next.retryAfter !== undefined ? { 'retry-after': next.retryAfter } : {}) })
        res.end(`scripted ${next.status}`)
        return
      }
      const handler = real.get(path)
      if (!handler) {
        res.writeHead(500).end('no handler')
        return
      }
      handler(req, res, body)
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())))
  srv.keepAliveTimeout = 100
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`
  return {
    url,
    real,
    /** Sets what `path` answers first; clears its request count. */
    script: (path: string, s: Scripted[]) => {
      scripts.set(path, [...s])
      seen.set(path, 0)
    },
    requests: (path: string) => seen.get(path) ?? 0,
  }
}

/** One HTTP caller, driven once: how it ended and every wait it asked for. */
interface Outcome {
  ok: boolean
  error?: unknown
  waits: number[]
  requests: number
}

interface Caller {
  name: string
  path: string
  /** The caller's policy cap on a wait (and on an honoured Retry-After). */
  maxDelayMs: number
  run(): Promise<Outcome>
}

const setUp = async (t: Test) => {
  const server = await startServer(t)
  const dir = t.testdir()
  const node = 'n1'
  const data = seededBytes(48 * 1024, 'retry-everywhere')
  const imagePath = '/img.sqfs'
  const manifest = manifestFor(data, [`${server.url}${imagePath}`], { min: 16 * 1024, max: 24 * 1024 })
  const manifestPath = '/v1/images/img/manifest'
  const descriptorPath = `/v1/nodes/${node}/boot`
  const eventsPath = `/v1/nodes/${node}/events`

  server.real.set(descriptorPath, (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ schema: 1, node, image: { name: 'img', sha256: manifest.sha256, size: manifest.size, manifest: manifestPath }, partitions: { cache: 'LABEL=cwcache', root: '/dev/vdb2' }, policies: { onfail: 'reboot' } }))
  })
  server.real.set(manifestPath, (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(serializeManifest(manifest))
  })
  server.real.set(imagePath, (req, res) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
    if (!m) {
      res.writeHead(200, { 'content-length': data.length }).end(data)
      return
    }
    const start = Number(m[1])
    const end = Math.min(Number(m[2]), data.length - 1)
    res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${data.length}`, 'content-length': end - start + 1 })
    res.end(data.subarray(start, end + 1))
  })
  server.real.set(eventsPath, (_q, res, body) => {
    const n = (JSON.parse(body) as { events: unknown[] }).events.length
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ accepted: n, duplicates: 0 }))
  })

  let runs = 0
  /** Runs one request whose waits go to a recording sleep; `go` resolves true when it got what it asked for. */
  const drive = async (path: string, go: (sleep: Sleep) => Promise<boolean>): Promise<Outcome> => {
    const waits: number[] = []
    const r = await go(async (ms) => void waits.push(ms)).then(
      (ok) => ({ ok }),
      (error: unknown) => ({ ok: false, error }),
    )
    return { ...r, waits, requests: server.requests(path) }
  }
  const callers: Caller[] = [
    {
      name: 'descriptor',
      path: descriptorPath,
      maxDelayMs: DEFAULT_RETRY_POLICY.maxDelayMs,
      run: () => drive(descriptorPath, async (sleep) => (await fetchDescriptor(server.url, node, { timeoutMs: 5000, random: () => 0, sleep })).node === node),
    },
    {
      name: 'manifest',
      path: manifestPath,
      maxDelayMs: DEFAULT_RETRY_POLICY.maxDelayMs,
      run: () => drive(manifestPath, async (sleep) => (await fetchManifest(`${server.url}${manifestPath}`, { random: () => 0, sleep })).sha256 === manifest.sha256),
    },
    {
      name: 'image',
      path: imagePath,
      maxDelayMs: DEFAULT_RETRY_POLICY.maxDelayMs,
      run: () =>
        drive(imagePath, async (sleep) => {
          const cache = await Cache.open(join(dir, `cache-${runs++}`))
          const x = await fetchImage({ manifest, cache, nodeId: 'n1', sleep })
          return x.sha256 === manifest.sha256 && !x.hit
        }),
    },
    {
      name: 'events',
      path: eventsPath,
      maxDelayMs: MAX_BACKOFF_MS,
      run: async () => {
        // The sender never gives up on an event: a final status waits its longest backoff instead of a short one.
        const waits: number[] = []
        const spool = new Spool(join(dir, `spool-${runs++}`))
        await spool.append(makeEvent('io-error', node, { message: `run ${runs}` }))
        const ac = new AbortController()
        let error: unknown
        const sleep = async (ms: number): Promise<void> => {
          waits.push(ms)
          if (waits.length > 10) ac.abort() // bounded, should it never get through
        }
        const sender = new Sender({ server: server.url, node, spools: [spool], random: () => 0, sleep })
        const ok = await new Promise<boolean>((resolve) => {
          const loop = sender.run({
            signal: ac.signal,
            onFlush: (f) => {
              if (f.sent) {
                ac.abort()
                resolve(true)
              }
            },
          })
          void loop.then(() => resolve(false))
        })
        if (!ok) error = sender.lastError
        return { ok, waits, requests: server.requests(eventsPath), ...(error ? { error } : {}) }
      },
    },
  ]
  return { server, callers }
}

/** Each caller, once per status, meeting that status first; `check` looks at how it went. */
const eachCallerMeeting = async (t: Test, statuses: number[], check: (c: Caller, status: number, r: Outcome) => void): Promise<void> => {
  const { server, callers } = await setUp(t)
  for (const c of callers) {
    for (const status of statuses) {
      server.script(c.path, [{ status }])
      check(c, status, await c.run())
    }
  }
}

t.test('descriptor, manifest, image and events all retry 408, 425, 429, 500, 502, 503 and 504', (t) =>
  eachCallerMeeting(t, RETRIED, (c, status, r) => {
    t.ok(r.ok, `${c.name} ${status}: retried and got there (${String(r.error ?? '')})`)
    t.equal(r.requests, 2, `${c.name} ${status}: asked twice`)
    t.equal(r.waits.length, 1, `${c.name} ${status}: waited once`)
    t.ok((r.waits[0] ?? Infinity) < c.maxDelayMs, `${c.name} ${status}: a backoff, not the longest wait`)
  }),
)

t.test('the other 4xx are final for every caller', (t) =>
  eachCallerMeeting(t, FINAL, (c, status, r) => {
    if (c.name === 'events') {
      // Events are kept, never given up: "final" is the longest wait before the next try.
      t.same(r.waits.slice(0, 1), [c.maxDelayMs], `${c.name} ${status}: not retried soon (${MAX_BACKOFF_MS} ms)`)
      t.ok(r.ok, `${c.name} ${status}: still delivered later`)
      return
    }
    t.notOk(r.ok, `${c.name} ${status}: failed`)
    t.match(r.error, { code: 'EHTTP', status }, `${c.name} ${status}: with the server's answer`)
    t.equal(r.requests, 1, `${c.name} ${status}: asked once`)
    t.same(r.waits, [], `${c.name} ${status}: never waited`)
  }),
)

t.test('every caller waits what Retry-After says: seconds, an HTTP date, capped at its policy\'s longest wait', async (t) => {
  const { server, callers } = await setUp(t)
  for (const c of callers) {
    server.script(c.path, [{ status: 503, retryAfter: '3' }])
    let r = await c.run()
    t.ok(r.ok, `${c.name}: got there after the wait`)
    t.same(r.waits, [3000], `${c.name}: Retry-After: 3 is a 3000 ms wait`)

    const at = new Date(Date.now() + 5000).toUTCString()
    server.script(c.path, [{ status: 429, retryAfter: at }])
    r = await c.run()
    t.ok(r.ok, `${c.name}: got there after the date`)
    t.ok(r.waits.length === 1 && r.waits[0]! >= 3000 && r.waits[0]! <= 5000, `${c.name}: Retry-After: ${at} is a wait until then (${r.waits[0]} ms)`)

    server.script(c.path, [{ status: 503, retryAfter: '3600' }])
    r = await c.run()
    t.same(r.waits, [c.maxDelayMs], `${c.name}: an hour is capped at ${c.maxDelayMs} ms`)
  }
})
