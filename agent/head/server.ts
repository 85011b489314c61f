/**
 * The reference head node (`boot-agent head`, SPEC §10), on plain node:http.
 * Serves boot descriptors, manifests and image bytes from an {@link ImageStore},
 * stores node events durably, and answers the consistency view. The wire
 * protocol is docs/protocol.md; this file only routes and enforces it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { open, readFile } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { join } from 'node:path'
import { timingSafeEqual, createHash } from 'node:crypto'
import { ConfigError, isErrno, messageOf } from '../errors.js'
import { type Logger, silentLogger } from '../log.js'
import { HttpProblem, parseJsonBody, parseRange, readBody, sendJson, sendProblem } from './http-util.js'
import { isSha256, nameProblem, normaliseArch } from './names.js'
import { type NodesConfig, parseNodesConfig, resolvePlan } from './nodes-config.js'
import { hashFile, ImageStore } from './store.js'
import { EventLog } from './event-log.js'
import type { AgentEvent } from '../protocol/event.js'
import { NodeStates, runningImage } from './node-state.js'
import { computeConsistency, type PublishedName, type StoreDrift } from './consistency.js'
import { DEFAULT_EVENT_LIMITS, type EventLimits, parseEventBatch } from './validate-events.js'
import { DEFAULT_RATE_LIMIT, RateLimiter, type RateLimitOptions } from './rate-limit.js'
import { manifestPathFor } from './publish.js'

/** Largest request body accepted (bytes); an event batch is the only body. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
/** How long a graceful shutdown waits for requests in flight. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000
/** At most one warning per this interval for a rate-limited path. */
const RATE_WARN_INTERVAL_MS = 60_000
/** Read size when streaming image bytes. */
const IMAGE_READ_BYTES = 1 << 20

export interface HeadOptions {
  /** Store directory (images, manifests, names; see agent/head/store.ts). */
  store: string
  /** Path of the nodes file (re-read by reload()/SIGHUP), or a parsed config. */
  nodes: string | NodesConfig
  /** `HOST:PORT` (`[::1]:8080`, `:8080`); default `127.0.0.1:0` (any free port). */
  listen?: string
  /** Directory of the event store; default `<store>/events`. */
  eventsDir?: string
  /** Bearer token every request must carry; none when omitted. */
  token?: string
  log?: Logger
  /** Largest request body (bytes). Default {@link DEFAULT_MAX_BODY_BYTES}. */
  maxBodyBytes?: number
  eventLimits?: Partial<EventLimits>
  /** Per-node event rate limit. */
  rateLimit?: Partial<RateLimitOptions>
  /** Answer image-byte requests with a 302 to the manifest's first mirror URL when it has one. */
  redirectToMirrors?: boolean
  /** Graceful shutdown deadline. Default {@link DEFAULT_SHUTDOWN_GRACE_MS}. */
  shutdownGraceMs?: number
}

export interface HeadStats {
  /** Every byte the server wrote to sockets (headers and bodies). */
  bytesWritten: number
  /** Image body bytes sent. */
  imageBytes: number
  /** Non-image body bytes sent (descriptors, manifests, JSON answers). */
  metadataBytes: number
  requests: number
  byRoute: Record<string, number>
}

export interface Head {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  url: string
  port: number
  /** Re-reads the nodes file; keeps the old config when the new one is invalid. True when it loaded. */
  reload(): Promise<boolean>
  stats(): HeadStats
  /**
   * Stops: refuses new connections, lets requests in flight finish (up to the
   * grace period), then closes the event store. `abort: true` drops every
   * connection at once (what a crash looks like to clients).
   */
  close(opts?: { abort?: boolean }): Promise<void>
}

export const parseListen = (listen: string): { host: string; port: number } => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen)
  const port = Number(m?.[3])
  if (!m || !Number.isInteger(port) || port > 65535) throw new ConfigError('--listen', `${JSON.stringify(listen)} is not HOST:PORT`)
  const host = m[1] ?? m[2] ?? ''
  return { host: host === '' ? '0.0.0.0' : host, port }
}

const loadNodesFile = async (path: string): Promise<NodesConfig> => {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (e) {
    throw new ConfigError('--nodes', `cannot read ${path}: ${messageOf(e)}`)
  }
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw new ConfigError('--nodes', `${path} is not valid JSON: ${messageOf(e)}`)
  }
  try {
    return parseNodesConfig(v)
  } catch (e) {
    throw new ConfigError('--nodes', `${path}: ${messageOf(e)}`)
  }
}

const sameToken = (given: string, want: string): boolean => {
  // Compare digests so the comparison takes the same time whatever the length.
  const a = createHash('sha256').update(given).digest()
  const b = createHash('sha256').update(want).digest()
  return timingSafeEqual(a, b)
}

/** Splits a request path into decoded segments; refuses bad escapes. */
const segmentsOf = (pathname: string): string[] => {
  try {
    return pathname.split('/').slice(1).map((s) => decodeURIComponent(s))
  } catch {
    throw new HttpProblem(400, 'EBADPATH', `path ${JSON.stringify(pathname)} has a malformed %-escape`)
  }
}

const checkName = (what: string, v: string): string => {
  const problem = nameProblem(v)
  if (problem) throw new HttpProblem(400, 'EBADNAME', `${what} ${JSON.stringify(v)} ${problem}`, { details: { field: what } })
  return v
}

const checkDigest = (v: string): string => {
  if (!isSha256(v)) throw new HttpProblem(400, 'EBADDIGEST', `digest ${JSON.stringify(v)} is not 64 lower-case hex digits`)
  return v
}

const methodNotAllowed = (allowed: string[]): HttpProblem =>
  new HttpProblem(405, 'EMETHOD', `method not allowed here (allowed: ${allowed.join(', ')})`, { headers: { allow: allowed.join(', ') } })

export const startHead = async (opts: HeadOptions): Promise<Head> => {
  const log = opts.log ?? silentLogger()
  const store = new ImageStore(opts.store)
  await store.init()
  let config = typeof opts.nodes === 'string' ? await loadNodesFile(opts.nodes) : opts.nodes
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const eventLimits: EventLimits = { ...DEFAULT_EVENT_LIMITS, ...opts.eventLimits }
  const limiter = new RateLimiter({ ...DEFAULT_RATE_LIMIT, ...opts.rateLimit })
  const states = new NodeStates()
  const events = new EventLog(opts.eventsDir ?? join(opts.store, 'events'), { log })
  // The events are stored by now; a bug in summarising one must not turn their acknowledgement into an error.
  const applyState = (e: AgentEvent): void => {
    try {
      states.apply(e)
    } catch (err) {
      log.error({ err, node: e.node, id: e.id, kind: e.kind }, 'could not fold an event into the node view')
    }
  }
  const replay = await events.open({ onReplay: applyState })
  log.info({ ...replay }, 'event store opened')

  const stats: HeadStats = { bytesWritten: 0, imageBytes: 0, metadataBytes: 0, requests: 0, byRoute: {} }
  const sockets = new Set<Socket>()
  let inFlight = 0
  let drained: (() => void) | undefined

  const json = (res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void => {
    stats.metadataBytes += sendJson(res, status, body, headers)
  }

  const descriptor = async (node: string, archParam: string | null): Promise<unknown> => {
    const reported = archParam === null ? undefined : normaliseArch(archParam)
    if (archParam !== null && !reported) throw new HttpProblem(400, 'EBADARCH', `arch ${JSON.stringify(archParam)} is not an architecture the head node knows`)
    const r = resolvePlan(config, node, reported)
    if (!r.ok) throw new HttpProblem(r.status, r.code, r.message)
    const { plan } = r
    let entry
    if (plan.image.sha256) {
      const pinned = plan.image.sha256
      entry = (await store.history(plan.image.name)).find((h) => h.sha256 === pinned)
      if (!entry) throw new HttpProblem(404, 'ENOIMAGE', `image ${plan.image.name}@sha256:${pinned} (pinned for ${node}) was never published under that name`)
    } else {
      entry = await store.current(plan.image.name)
      if (!entry) throw new HttpProblem(404, 'ENOIMAGE', `image ${plan.image.name} (for node ${node}, from ${plan.imageFrom}) is not published in the store`)
    }
    const imageArch = config.images[plan.image.name]?.arch ?? entry.arch
    if (plan.arch && plan.arch !== imageArch) {
      throw new HttpProblem(409, 'EARCH', `image ${plan.image.name} is ${imageArch} but node ${node} is ${plan.arch}; refusing to hand it out`, {
        details: { imageArch, nodeArch: plan.arch },
      })
    }
    return {
      schema: 1,
      node,
      style: plan.style,
      image: { name: plan.image.name, sha256: entry.sha256, size: entry.size, arch: imageArch, manifest: manifestPathFor(entry.sha256) },
      partitions: plan.partitions,
      policies: plan.policies,
    }
  }

  const serveManifest = async (res: ServerResponse, sha256: string | undefined, what: string, head: boolean): Promise<void> => {
    const text = sha256 ? await store.manifestText(sha256) : undefined
    if (!sha256 || text === undefined) throw new HttpProblem(404, 'ENOIMAGE', `no manifest for ${what}`)
    const bytes = Buffer.byteLength(text)
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(bytes), 'x-image-sha256': sha256, 'cache-control': 'no-cache' })
    if (head) res.end()
    else {
      res.end(text)
      stats.metadataBytes += bytes
    }
  }

  const serveImage = async (req: IncomingMessage, res: ServerResponse, sha256: string, head: boolean): Promise<void> => {
    const record = await store.objectRecord(sha256)
    if (!record) throw new HttpProblem(404, 'ENOIMAGE', `no image with digest ${sha256} in the store`)
    if (opts.redirectToMirrors) {
      const text = await store.manifestText(sha256)
      const urls: unknown = text ? (JSON.parse(text) as { urls?: unknown }).urls : undefined
      const mirror = Array.isArray(urls) ? urls.find((u): u is string => typeof u === 'string' && /^https?:\/\//.test(u)) : undefined
      if (mirror) {
        res.writeHead(302, { location: mirror, 'content-length': '0' })
        res.end()
        return
      }
    }
    // One descriptor for stat and read, so size and bytes come from one file.
    const fh = await open(store.objectPath(sha256), 'r').catch((e: unknown) => {
      if (isErrno(e, 'ENOENT')) throw new HttpProblem(404, 'ENOIMAGE', `the store's file for ${sha256} is missing (see GET /v1/consistency)`)
      throw e
    })
    let handedOff = false
    try {
      const size = (await fh.stat()).size
      const range = parseRange(typeof req.headers.range === 'string' ? req.headers.range : undefined, size)
      if (range === 'unsatisfiable') {
        throw new HttpProblem(416, 'ERANGE', `range ${req.headers.range ?? ''} is outside the image's ${size} bytes`, {
          headers: { 'content-range': `bytes */${size}` },
        })
      }
      const start = range?.start ?? 0
      const end = range?.end ?? size - 1
      const length = size === 0 ? 0 : end - start + 1
      const headers: Record<string, string> = {
        'content-type': 'application/octet-stream',
        'content-length': String(length),
        'accept-ranges': 'bytes',
      }
      if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`
      res.writeHead(range ? 206 : 200, headers)
      if (head || length === 0) {
        res.end()
        return
      }
      const stream = createReadStream('', { fd: fh, start, end, highWaterMark: IMAGE_READ_BYTES, autoClose: true })
      handedOff = true
      stream.on('data', (chunk) => {
        stats.imageBytes += (chunk as Buffer).length
      })
      await pipeline(stream, res).catch((e: unknown) => {
        log.debug({ sha256, err: e }, 'image stream ended early (client went away?)')
      })
    } finally {
      if (!handedOff) await fh.close()
    }
  }

  const postEvents = async (req: IncomingMessage, res: ServerResponse, node: string): Promise<void> => {
    if (!config.nodes[node]) throw new HttpProblem(404, 'ENONODE', `node ${JSON.stringify(node)} is not in the nodes file`)
    const ctype = req.headers['content-type']
    if (ctype !== undefined && !/^application\/json\b/i.test(ctype)) throw new HttpProblem(415, 'EMEDIATYPE', `content-type ${ctype} is not application/json`)
    const body = parseJsonBody(await readBody(req, maxBody))
    const batch = parseEventBatch(body, node, eventLimits)
    const waitMs = limiter.take(node, batch.length)
    if (waitMs > 0) {
      const retryAfter = Math.max(1, Math.ceil(waitMs / 1000))
      throw new HttpProblem(429, 'ERATE', `node ${node} is sending events faster than the limit; retry after ${retryAfter} s`, {
        headers: { 'retry-after': String(retryAfter) },
        details: { retryAfterSeconds: retryAfter },
      })
    }
    let result
    try {
      result = await events.append(node, batch)
    } catch (e) {
      limiter.refund(node, batch.length)
      log.error({ node, err: e }, 'storing events failed')
      throw new HttpProblem(503, 'ESTORE', `events were not stored: ${messageOf(e)}; retry later`, { headers: { 'retry-after': '5' } })
    }
    if (result.duplicates) limiter.refund(node, result.duplicates)
    for (const e of result.accepted) applyState(e)
    json(res, 200, { accepted: result.accepted.length, duplicates: result.duplicates })
  }

  const nodeView = (node: string): unknown => {
    const configured = config.nodes[node]
    const v = states.get(node)
    if (!configured && !v) throw new HttpProblem(404, 'ENONODE', `node ${JSON.stringify(node)} is not in the nodes file and has sent no events`)
    const plan = resolvePlan(config, node)
    return {
      schema: 1,
      node,
      configured: Boolean(configured),
      ...(plan.ok ? { plan: { style: plan.plan.style, image: plan.plan.image, arch: plan.plan.arch ?? null } } : {}),
      running: v ? (runningImage(v) ?? null) : null,
      lastBoot: v?.lastBoot ?? null,
      lastStatus: v?.lastStatus ?? null,
      lastFallback: v?.lastFallback ?? null,
      lastEventAt: v?.lastEventAt ?? null,
      events: events.count(node),
      integrity: { count: v?.integrityCount ?? 0, recent: v?.integrity ?? [] },
      squashfsErrors: v?.squashfsErrors ?? { count: 0 },
      ioErrors: v?.ioErrors ?? { count: 0 },
      lost: v?.lost ?? 0,
    }
  }

  const driftHashes = new Map<string, string>()
  const consistency = async (): Promise<unknown> => {
    const published: PublishedName[] = []
    for (const name of await store.names()) {
      const history = await store.history(name)
      const current = await store.current(name)
      const drift: StoreDrift[] = []
      for (const sha of new Set(history.map((h) => h.sha256))) {
        const d = await store.drift(sha)
        if (!d) continue
        if (d.found === 'missing') {
          drift.push(d)
          continue
        }
        // Hash the changed file once per (inode, size, mtime): what the head serves now.
        const key = `${sha}:${d.found.ino}:${d.found.size}:${d.found.mtimeMs}`
        let now = driftHashes.get(key)
        if (!now) {
          now = await hashFile(store.objectPath(sha)).catch(() => undefined)
          if (now) driftHashes.set(key, now)
        }
        drift.push({ ...d, ...(now ? { nowSha256: now } : {}) })
      }
      published.push({ name, history, drift, ...(current ? { current } : {}) })
    }
    return computeConsistency(published, states.all())
  }

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<string> => {
    // Segments come from the raw path: the URL parser would resolve `..`
    // away, and a client sending `..` must be told no, not routed elsewhere.
    const raw = req.url ?? '/'
    const url = new URL(raw, 'http://head.invalid')
    const seg = segmentsOf(raw.split('?')[0] ?? '/')
    const method = req.method ?? 'GET'
    const isGet = method === 'GET' || method === 'HEAD'
    if (seg[0] !== 'v1') throw new HttpProblem(404, 'ENOTFOUND', `no such endpoint ${url.pathname} (this server speaks /v1)`)
    if (opts.token !== undefined) {
      const auth = req.headers.authorization ?? ''
      const m = /^Bearer\s+(\S+)$/i.exec(auth)
      if (!m?.[1] || !sameToken(m[1], opts.token)) {
        throw new HttpProblem(401, 'EAUTH', 'missing or wrong bearer token', { headers: { 'www-authenticate': 'Bearer realm="boot-agent"' } })
      }
    }
    const [, a, b, c, d] = seg
    const n = seg.length
    if (n === 1 || (n === 2 && a === '')) {
      if (!isGet) throw methodNotAllowed(['GET', 'HEAD'])
      json(res, 200, { protocol: 'boot-agent', version: 1 })
      return 'root'
    }
    if (a === 'consistency' && n === 2) {
      if (!isGet) throw methodNotAllowed(['GET', 'HEAD'])
      json(res, 200, await consistency())
      return 'consistency'
    }
    if (a === 'nodes' && b !== undefined) {
      const node = checkName('node id', b)
      if (n === 3) {
        if (!isGet) throw methodNotAllowed(['GET', 'HEAD'])
        json(res, 200, nodeView(node))
        return 'node'
      }
      if (n === 4 && c === 'boot') {
        if (!isGet) throw methodNotAllowed(['GET', 'HEAD'])
        json(res, 200, await descriptor(node, url.searchParams.get('arch')))
        return 'descriptor'
      }
      if (n === 4 && c === 'events') {
        if (method !== 'POST') throw methodNotAllowed(['POST'])
        await postEvents(req, res, node)
        return 'events'
      }
    }
    if (a === 'images') {
      if (!isGet) throw methodNotAllowed(['GET', 'HEAD'])
      if (n === 2) {
        const names = await store.names()
        const list = []
        for (const name of names) list.push({ name, current: (await store.current(name)) ?? null })
        json(res, 200, { images: list })
        return 'images'
      }
      if (b === 'by-digest' && n === 5 && c !== undefined) {
        const sha = checkDigest(c)
        if (d === 'manifest') {
          await serveManifest(res, sha, `digest ${sha}`, method === 'HEAD')
          return 'manifest'
        }
        if (d === 'image') {
          await serveImage(req, res, sha, method === 'HEAD')
          return 'image'
        }
      }
      if (b !== undefined && b !== 'by-digest') {
        const name = checkName('image name', b)
        if (n === 3) {
          const history = await store.history(name)
          if (!history.length) throw new HttpProblem(404, 'ENOIMAGE', `image ${name} was never published`)
          json(res, 200, { name, current: (await store.current(name)) ?? null, history })
          return 'image-name'
        }
        if (n === 4 && c === 'manifest') {
          await serveManifest(res, (await store.current(name))?.sha256, `image ${name}`, method === 'HEAD')
          return 'manifest'
        }
      }
    }
    throw new HttpProblem(404, 'ENOTFOUND', `no such endpoint ${url.pathname}`)
  }

  // A flooding node is worth one warning a minute, not one per refused request.
  const lastWarned = new Map<string, number>()
  const warnNow = (key: string): boolean => {
    const now = Date.now()
    if ((lastWarned.get(key) ?? 0) > now - RATE_WARN_INTERVAL_MS) return false
    if (lastWarned.size > 10_000) lastWarned.clear()
    lastWarned.set(key, now)
    return true
  }

  const server: Server = createServer({ keepAliveTimeout: 5_000, requestTimeout: 60_000 }, (req, res) => {
    stats.requests++
    inFlight++
    const started = performance.now()
    res.once('close', () => {
      inFlight--
      if (inFlight === 0) drained?.()
    })
    route(req, res).then(
      (name) => {
        stats.byRoute[name] = (stats.byRoute[name] ?? 0) + 1
        log.debug({ method: req.method, url: req.url, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request')
      },
      (e: unknown) => {
        const p = e instanceof HttpProblem ? e : new HttpProblem(500, 'EINTERNAL', `internal error: ${messageOf(e)}`)
        if (p.status >= 500) log.error({ method: req.method, url: req.url, err: e }, p.message)
        else if (p.status === 429 && !warnNow(req.url ?? '')) log.debug({ method: req.method, url: req.url, status: p.status }, p.message)
        else log.warn({ method: req.method, url: req.url, status: p.status, code: p.code }, p.message)
        if (res.headersSent) {
          res.destroy()
          return
        }
        // The request body may be unread (413): close instead of reusing the connection.
        if (!req.complete) res.setHeader('connection', 'close')
        stats.metadataBytes += sendProblem(res, p)
        if (!req.complete) req.resume()
      },
    )
  })
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.once('close', () => {
      stats.bytesWritten += s.bytesWritten
      sockets.delete(s)
    })
  })
  server.on('clientError', (err, socket) => {
    log.debug({ err }, 'bad HTTP from a client')
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
    else socket.destroy()
  })

  const { host, port } = parseListen(opts.listen ?? '127.0.0.1:0')
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address()
  const boundPort = typeof addr === 'object' && addr ? addr.port : port
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host
  const url = `http://${urlHost}:${boundPort}`
  log.info({ url, store: opts.store, nodes: Object.keys(config.nodes).length, auth: opts.token !== undefined }, 'head node listening')

  let closing: Promise<void> | undefined
  return {
    url,
    port: boundPort,
    async reload() {
      if (typeof opts.nodes !== 'string') return false
      try {
        config = await loadNodesFile(opts.nodes)
        log.info({ nodes: Object.keys(config.nodes).length, file: opts.nodes }, 'nodes file reloaded')
        return true
      } catch (e) {
        log.error({ err: e, file: opts.nodes }, `nodes file not reloaded, keeping the previous one: ${messageOf(e)}`)
        return false
      }
    },
    stats() {
      let live = 0
      for (const s of sockets) live += s.bytesWritten
      return { ...stats, bytesWritten: stats.bytesWritten + live, byRoute: { ...stats.byRoute } }
    },
    close({ abort = false } = {}) {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
        if (abort) server.closeAllConnections()
        else {
          server.closeIdleConnections()
          if (inFlight > 0) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, opts.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS)
              drained = () => {
                clearTimeout(timer)
                resolve()
              }
            })
          }
          server.closeAllConnections()
        }
        await stopped
        await events.close()
        let live = 0
        for (const sk of sockets) live += sk.bytesWritten
        log.info({ url, ...stats, bytesWritten: stats.bytesWritten + live }, 'head node stopped')
      })()
      return closing
    },
  }
}
