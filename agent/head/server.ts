/**
 * The reference head node (`boot-agent head`, SPEC §10), on plain node:http.
 * Serves boot descriptors, manifests and image bytes from an {@link ImageStore},
 * stores node events durably, and answers the consistency view. The wire
 * protocol is docs/protocol.md. This file holds the lifecycle (listen,
 * reload, graceful close, stats) and wires the rooms together: the route
 * table (routes.ts, router.ts), the descriptor decision (descriptor.ts),
 * Range serving (range.ts, image-answers.ts), event ingestion (ingest.ts),
 * the read-only views (views.ts), authentication (auth.ts) and the nodes
 * file (nodes-file.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { ConfigError, messageOf } from '../core/errors.js'
import { type Logger, silentLogger } from '../core/log.js'
import { authenticate, authorize, checkSiteTokenUnshared } from './auth.js'
import { readTls } from './tls-files.js'
import { type Clock, systemClock } from '../core/clock.js'
import { describeNode } from './descriptor.js'
import { EventLog } from './event-log.js'
import { HttpProblem, sendJson, sendProblem } from './http-util.js'
import { sendImage, sendManifest } from './image-answers.js'
import { GzipCache } from './immutable.js'
import { Admission, type AdmissionLimits, type AdmissionStats, DEFAULT_ADMISSION } from './admission.js'
import { isSafeName } from './names.js'
import { type IngestDeps, ingestEvents, type StoredEvent } from './ingest.js'
import { NodeStates } from './node-state.js'
import type { NodesConfig } from './nodes-config.js'
import { NodesSource } from './nodes-file.js'
import { DEFAULT_RATE_LIMIT, LogThrottle, RateLimiter, type RateLimitOptions } from './rate-limit.js'
import { parseTarget, Router } from './router.js'
import { headRoutes, UNVERSIONED_PATHS } from './routes.js'
import { HeadMetrics } from './metrics.js'
import { ImageStore } from './store.js'
import { DEFAULT_EVENT_LIMITS, type EventLimits } from './validate-events.js'
import { consistencyView, imageHistory, imageList, nodesView, nodeView } from './views.js'
import { bootLogLine } from './boot-log.js'
import { unpublishedImages } from './unpublished.js'

/** Largest request body accepted (bytes); an event batch is the only body. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
/** How long a graceful shutdown waits for requests in flight. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000
/** At most one warning per this interval for a rate-limited path. */
const RATE_WARN_INTERVAL_MS = 60_000

export interface HeadOptions {
  /** Store directory (images, manifests, names; see agent/head/store.ts). */
  store: string
  /** Path of the nodes file (re-read by reload()/SIGHUP), or a parsed config. */
  nodes: string | NodesConfig
  /** `HOST:PORT` (`[::1]:8080`, `:8080`); default `127.0.0.1:0` (any free port). */
  listen?: string
  /** Directory of the event store; default `<store>/events`. */
  eventsDir?: string
  /**
   * Site-wide bearer token every request must carry (or a node's own
   * credential, docs/security.md); none when omitted.
   */
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
  /** Where the head reads the time (rate limits, the consistency view, logged durations). Default: the wall clock. */
  clock?: Clock
  /**
   * Serve https with this certificate chain and key (PEM files, read at start
   * and again by reload()/SIGHUP, so a renewed certificate needs no restart).
   * Nodes trust it through the site CA (agent/transport/trust.ts).
   */
  tls?: { certFile: string; keyFile: string }
  /** Caps on requests and image streams in flight, and the Retry-After of a shed request. Default {@link DEFAULT_ADMISSION}. */
  admission?: Partial<AdmissionLimits>
  /** Most open connections (file descriptors) at once; more are refused by the kernel's accept. Default {@link DEFAULT_MAX_CONNECTIONS}. */
  maxConnections?: number
}

/** Most open client connections by default: each is a descriptor and socket buffers; far under a head's fd limit. */
export const DEFAULT_MAX_CONNECTIONS = 4096

export interface HeadStats {
  /** Every byte the server wrote to sockets (headers and bodies). */
  bytesWritten: number
  /** Image body bytes sent. */
  imageBytes: number
  /** Non-image body bytes sent (descriptors, manifests, JSON answers). */
  metadataBytes: number
  requests: number
  byRoute: Record<string, number>
  /** Requests answered 503 EBUSY (over a cap), and the most requests / image streams in flight at once. */
  admission: AdmissionStats
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

/** The node a request says it is from (`X-Boot-Agent-Node`), when it says and the name is acceptable. */
const nodeHeader = (req: IncomingMessage): string | undefined => {
  const v = req.headers['x-boot-agent-node']
  return typeof v === 'string' && isSafeName(v) ? v : undefined
}

export const parseListen = (listen: string): { host: string; port: number } => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen)
  const port = Number(m?.[3])
  if (!m || !Number.isInteger(port) || port > 65535) throw new ConfigError('--listen', `${JSON.stringify(listen)} is not HOST:PORT`)
  const host = m[1] ?? m[2] ?? ''
  return { host: host === '' ? '0.0.0.0' : host, port }
}

/** A failed listen as a usage error naming --listen and what to do; other errors as they are. */
const listenProblem = (e: unknown, listen: string): unknown => {
  const why: Record<string, string> = {
    EADDRINUSE: 'is already in use (another head, or another server on that port): stop it or choose another port',
    EADDRNOTAVAIL: 'is not an address of this machine: give one of its addresses, or :PORT for all',
    EACCES: 'needs privileges (a port below 1024): choose a port from 1024, or give the service CAP_NET_BIND_SERVICE',
    ENOTFOUND: 'names a host that does not resolve: give an address, or :PORT for all',
  }
  const code = (e as NodeJS.ErrnoException).code
  return code && why[code] ? new ConfigError('--listen', `${listen} ${why[code]}`, { errno: code }) : e
}

/** What a handler gets: the request, its answer, and what routing found. */
interface Call {
  req: IncomingMessage
  res: ServerResponse
  /** Checked path parameters (`node`, `image`, `digest`). */
  params: Record<string, string>
  query: URLSearchParams
  /** A HEAD request: headers only. */
  head: boolean
}

type Handler = (call: Call) => Promise<void>

export const startHead = async (opts: HeadOptions): Promise<Head> => {
  const log = opts.log ?? silentLogger()
  const clock = opts.clock ?? systemClock
  const store = new ImageStore(opts.store)
  await store.init()
  const nodes = await NodesSource.open(opts.nodes, log, (config) => checkSiteTokenUnshared(config, opts.token))
  // A name not (yet) published loads, but its nodes would be refused: say so at load and each reload.
  const warnUnpublished = async (): Promise<void> => {
    for (const u of await unpublishedImages(nodes.config, store)) {
      log.warn({ where: u.where, image: u.image }, `nodes file: ${u.where} names image ${u.image}, which is not published in ${opts.store}: its nodes get no boot descriptor until \`boot-agent publish IMAGE --name ${u.image} --store ${opts.store}\``)
    }
  }
  await warnUnpublished()
  const limiter = new RateLimiter({ ...DEFAULT_RATE_LIMIT, now: () => clock.now(), ...opts.rateLimit })
  const states = new NodeStates()
  const events = new EventLog(opts.eventsDir ?? join(opts.store, 'events'), { log })
  const driftHashes = new Map<string, string>()
  const metrics = new HeadMetrics({ nodes: () => states.all(), consistency: () => consistencyView(store, states, driftHashes, clock) })
  /** The route each answer came from, for the latency histogram. */
  const routeOf = new WeakMap<ServerResponse, string>()
  // The events are stored by now; a bug in summarising one must not turn their acknowledgement into an error.
  const applyState = (e: StoredEvent): void => {
    metrics.countEvent(e.kind)
    try {
      states.apply(e)
    } catch (err) {
      log.error({ err, node: e.node, id: e.id, kind: e.kind }, 'could not fold an event into the node view')
    }
  }
  const replay = await events.open({ onReplay: applyState })
  log.info({ ...replay }, 'event store opened')
  const ingest: IngestDeps = {
    events,
    limiter,
    maxBodyBytes: opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    eventLimits: { ...DEFAULT_EVENT_LIMITS, ...opts.eventLimits },
    log,
    apply: (e) => {
      applyState(e)
      const line = bootLogLine(e, states.get(e.node)?.lastBoot)
      if (line) log[line.level](line.fields, line.message)
    },
  }

  const admission = new Admission({ ...DEFAULT_ADMISSION, ...opts.admission })
  const stats: HeadStats = { bytesWritten: 0, imageBytes: 0, metadataBytes: 0, requests: 0, byRoute: {}, admission: admission.stats }
  const sockets = new Set<Socket>()
  let inFlight = 0
  let drained: (() => void) | undefined

  const json = (res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void => {
    stats.metadataBytes += sendJson(res, status, body, headers)
  }
  const param = (call: Call, name: string): string => call.params[name] as string
  const gzipCache = new GzipCache()

  const router = new Router<Handler>(
    headRoutes<Handler>({
      root: async ({ res }) => json(res, 200, { protocol: 'boot-agent', version: 1 }),
      consistency: async ({ res }) => json(res, 200, await consistencyView(store, states, driftHashes, clock)),
      node: async (call) => json(call.res, 200, nodeView(nodes.config, states, param(call, 'node'), events.count(param(call, 'node')))),
      nodes: async ({ res }) => json(res, 200, nodesView(nodes.config, states, (n) => events.count(n))),
      descriptor: async (call) => json(call.res, 200, await describeNode(nodes.config, store, param(call, 'node'), call.query.get('arch'))),
      events: async (call) => json(call.res, 200, await ingestEvents(call.req, nodes.config, param(call, 'node'), ingest)),
      images: async ({ res }) => json(res, 200, await imageList(store)),
      imageName: async (call) => json(call.res, 200, await imageHistory(store, param(call, 'image'))),
      manifestByName: async (call) => {
        const name = param(call, 'image')
        stats.metadataBytes += await sendManifest(call.res, store, (await store.current(name))?.sha256, `image ${name}`, call.head, { req: call.req, gzip: gzipCache })
      },
      manifestByDigest: async (call) => {
        const sha = param(call, 'digest')
        stats.metadataBytes += await sendManifest(call.res, store, sha, `digest ${sha}`, call.head, { req: call.req, immutable: true, gzip: gzipCache })
      },
      imageBytes: async (call) => {
        const sha256 = param(call, 'digest')
        await sendImage(call.req, call.res, store, sha256, {
          head: call.head,
          redirectToMirrors: opts.redirectToMirrors,
          onBytes: (n) => (stats.imageBytes += n),
          onCut: (e) => log.debug({ sha256, err: e }, 'image stream ended early (client went away?)'),
        })
      },
      metrics: async (call) => {
        stats.metadataBytes += await metrics.send(call.res, call.head)
      },
    }),
  )

  /** Routes and answers one request; returns the route's name for the stats. */
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<string> => {
    const target = parseTarget(req.url ?? '/', UNVERSIONED_PATHS)
    // Who is asking, before routing (a 401 tells nothing of which paths exist); what they may claim, after.
    const who = authenticate(req.headers.authorization, opts.token, nodes.config)
    const method = req.method ?? 'GET'
    const { route, params, query } = router.match(method, target)
    routeOf.set(res, route.name)
    authorize(nodes.config, who, { name: route.name, ...(params.node !== undefined ? { node: params.node } : {}), ...(req.socket.remoteAddress ? { remote: req.socket.remoteAddress } : {}) }, opts.token)
    // Over a cap: 503 now, with a Retry-After spread by node (its id, else its connection), not a queue that times out.
    const release = admission.admit(params.node ?? nodeHeader(req) ?? `${req.socket.remoteAddress}:${req.socket.remotePort}`, route.name === 'image' && method !== 'HEAD')
    res.once('close', release)
    await route.handler({ req, res, params, query, head: method === 'HEAD' })
    return route.name
  }

  const rateWarnings = new LogThrottle(RATE_WARN_INTERVAL_MS, () => clock.now())

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    stats.requests++
    inFlight++
    const started = clock.now()
    // Who the request says it is from (X-Boot-Agent-Node), on its log lines.
    const asked = nodeHeader(req)
    const from = asked ? { node: asked } : {}
    res.once('close', () => {
      metrics.observeRequest(routeOf.get(res) ?? 'none', req.method ?? '', res.statusCode, (clock.now() - started) / 1000)
      inFlight--
      if (inFlight === 0) drained?.()
    })
    handle(req, res).then(
      (name) => {
        stats.byRoute[name] = (stats.byRoute[name] ?? 0) + 1
        log.debug({ method: req.method, url: req.url, ...from, status: res.statusCode, ms: Math.round(clock.now() - started) }, 'request')
      },
      (e: unknown) => {
        const p = e instanceof HttpProblem ? e : new HttpProblem(500, 'EINTERNAL', `internal error: ${messageOf(e)}`)
        if (p.status >= 500) log.error({ method: req.method, url: req.url, ...from, err: e }, p.message)
        else if (p.status === 429 && !rateWarnings.due(req.url ?? '')) log.debug({ method: req.method, url: req.url, ...from, status: p.status }, p.message)
        else log.warn({ method: req.method, url: req.url, ...from, status: p.status, code: p.code }, p.message)
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
  }
  const serverOptions = { keepAliveTimeout: 5_000, requestTimeout: 60_000 }
  const server: Server | TlsServer = opts.tls
    ? createTlsServer({ ...serverOptions, ...(await readTls(opts.tls)) }, onRequest)
    : createServer(serverOptions, onRequest)
  server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS
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
    server.once('error', (e) => reject(listenProblem(e, opts.listen ?? `${host}:${port}`)))
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address()
  const boundPort = typeof addr === 'object' && addr ? addr.port : port
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host
  const url = `${opts.tls ? 'https' : 'http'}://${urlHost}:${boundPort}`
  log.info({ url, store: opts.store, nodes: Object.keys(nodes.config.nodes).length, auth: opts.token !== undefined, tls: Boolean(opts.tls) }, 'head node listening')

  let closing: Promise<void> | undefined
  return {
    url,
    port: boundPort,
    async reload() {
      if (opts.tls && 'setSecureContext' in server) {
        try {
          server.setSecureContext(await readTls(opts.tls))
          log.info({ cert: opts.tls.certFile }, 'TLS certificate reloaded')
        } catch (e) {
          log.error({ err: e }, `TLS certificate not reloaded, keeping the previous one: ${messageOf(e)}`)
        }
      }
      const loaded = await nodes.reload()
      if (loaded) await warnUnpublished()
      return loaded
    },
    stats() {
      let live = 0
      for (const s of sockets) live += s.bytesWritten
      return { ...stats, bytesWritten: stats.bytesWritten + live, byRoute: { ...stats.byRoute }, admission: { ...stats.admission } }
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
