/**
 * Image bytes over plain HTTP, read by the kernel straight into the
 * downloader's write buffers.
 *
 * Why not node:http: measured here (2 GiB from nginx on loopback, 2 cores),
 * node:http with a 'data' handler copying into the write buffers ran at
 * 0.47–0.53 GB/s and node-fetch at 0.42–0.46 GB/s — node:http allocates a
 * fresh 64 KiB Buffer for every socket read (GC) and runs each through its
 * stream machinery — while a socket reading into the caller's memory
 * (net.Socket `onread`, no allocation, no copy) ran at 1.7–2.0 GB/s. The
 * download's goal is to beat `curl -o && sync` with every byte verified, so
 * the receive path matters.
 *
 * Deliberately narrow: an HTTP/1.1 GET of a static file over `http:`, whose
 * answer is 200/206 with a Content-Length and no Transfer-Encoding (what
 * nginx, the head node and object stores send for files). Anything else —
 * https, redirects, chunked or unsized bodies — makes {@link directGet}
 * return `undefined` and the caller uses node-fetch (http.ts). Error statuses
 * become the same HttpError as there.
 *
 * Connections are kept alive and reused (a small idle pool per origin); a
 * reused connection that the server closed meanwhile is retried once on a
 * fresh one.
 *
 * Over 400 lines: one protocol implementation (request, head parsing, bodies
 * by length, keep-alive pool) that must be read and kept safe as a whole;
 * undici was measured against it and lost on every round (docs/performance.md,
 * "HTTP client: undici measured against direct-http").
 */
import net from 'node:net'
import { BootAgentError, foreignCode, isErrno } from '../core/errors.js'
import { authHeaders } from '../core/head-token.js'
import { nodeHeaders } from '../protocol/node-header.js'
import { HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS, partialContent, statusError, type BodyMeta, type RequestOptions } from './http.js'

/** Largest response head accepted. */
export const MAX_HEAD_BYTES = 64 * 1024
/** Idle connections kept per origin, and for how long. */
const POOL_PER_ORIGIN = 4
const POOL_IDLE_MS = 30_000

export interface DirectBody extends BodyMeta {
  /**
   * Reads the next body bytes into `into` (its length caps the read) and
   * returns how many: at least 1, or 0 once the whole body was read. Rejects
   * on a network error, a body shorter than its Content-Length, a stall
   * (EIDLE) or an abort. One read at a time.
   */
  read(into: Uint8Array): Promise<number>
  /** Stops reading; the connection is closed unless the body was read to the end. */
  cancel(): void
}

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/
const HEAD_END = Buffer.from('\r\n\r\n')

/**
 * One connection. Node's `onread` asks for the buffer of the NEXT socket
 * read right after delivering the previous one, so the target is always
 * chosen one read ahead: the rest of the buffer the caller last gave (where
 * the caller reads next in the steady state: zero copies), else a spare
 * buffer whose bytes are copied out later. Between requests (and before the
 * first) the next read goes to the connection's head buffer.
 */
class Conn {
  readonly sock: net.Socket
  readonly headBuf = Buffer.allocUnsafe(MAX_HEAD_BYTES)
  /**
   * Spare buffers, reused from request to request: reads that cannot go to
   * the caller's buffer (it is full, or busy being written) land here. A
   * fresh one per 256 KiB was ~1 MiB of garbage per 4 MiB write buffer while
   * the writer waited, which made V8 grow its young generation (+20 MB
   * peak RSS in a 2 GiB download).
   */
  readonly spares: Buffer[] = []
  /** The request using it (undefined while idle in the pool). */
  req: Req | undefined
  readonly origin: string
  idleTimer: NodeJS.Timeout | undefined
  closed = false

  constructor(host: string, port: number, origin: string, onConnect: () => void) {
    this.origin = origin
    this.sock = net.connect(
      {
        host,
        port,
        noDelay: true,
        onread: {
          buffer: () => this.req?.target() ?? this.headBuf,
          callback: (n: number, buf: Uint8Array) => this.req?.received(n, buf) ?? false,
        },
      },
      onConnect,
    )
    this.sock.on('error', (e) => this.req?.socketError(e))
    this.sock.on('end', () => this.req?.ended())
    this.sock.on('close', () => {
      this.closed = true
      this.req?.ended()
      dropFromPool(this)
    })
  }
}

const pool = new Map<string, Conn[]>()

const dropFromPool = (c: Conn): void => {
  const list = pool.get(c.origin)
  const i = list?.indexOf(c) ?? -1
  if (list && i >= 0) list.splice(i, 1)
  if (c.idleTimer) clearTimeout(c.idleTimer)
}

const release = (c: Conn): void => {
  c.req = undefined
  const list = pool.get(c.origin) ?? []
  if (c.closed || list.length >= POOL_PER_ORIGIN) {
    c.sock.destroy()
    return
  }
  c.sock.unref()
  c.idleTimer = setTimeout(() => c.sock.destroy(), POOL_IDLE_MS)
  c.idleTimer.unref()
  list.push(c)
  pool.set(c.origin, list)
}

/** Closes every idle pooled connection (tests, shutdown). */
export const closeIdleConnections = (): void => {
  for (const list of pool.values()) for (const c of list.splice(0)) c.sock.destroy()
}

type HeadResult = { kind: 'head'; status: number; headers: Map<string, string> } | { kind: 'error'; error: unknown }

/** Received body bytes not yet handed to the caller, beyond which the socket is paused. */
const MAX_AHEAD_BYTES = 1024 * 1024
/** Read size into the spare buffer. */
const SPARE_READ_BYTES = 64 * 1024
/** Size of each spare buffer. */
const SPARE_BUFFER_BYTES = MAX_AHEAD_BYTES / 4
/**
 * Spare buffers a connection keeps: as many as bytes ahead can pin at once. A spare is
 * left for the next once less than a read's room is free in it, so each full one holds
 * at least SPARE_BUFFER_BYTES - SPARE_READ_BYTES; add the partly handed-over first one and
 * the one being filled. (MAX_AHEAD / SPARE + 2 = 6 was one short: under load a seventh
 * was needed, allocated afresh and dropped each time, 14 allocations in a test.)
 */
export const MAX_SPARES = Math.ceil(MAX_AHEAD_BYTES / (SPARE_BUFFER_BYTES - SPARE_READ_BYTES)) + 2

const overlaps = (a: Uint8Array, b: Uint8Array): boolean =>
  a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length

/** One GET on one connection: the head, then the body read into the caller's buffers. */
class Req {
  private headLen = 0
  private inHead = true
  private onHead: ((r: HeadResult) => void) | undefined
  /** Body bytes still to come from the socket. */
  remaining = 0
  /** Body bytes still to hand to the caller. */
  private unread = 0
  /** Received bytes not yet handed over, in order (each a view of where they landed). */
  private ahead: Uint8Array[] = []
  private aheadBytes = 0
  /** The caller's last buffer and how much of it is filled or spoken for. */
  private cur: Uint8Array | undefined
  private used = 0
  private spare: Buffer | undefined
  private spareEnd = 0
  private paused = false
  private waiting: { into: Uint8Array; resolve: (n: number) => void; reject: (e: unknown) => void } | undefined
  private error: unknown
  private gotBytes = false
  private idle: NodeJS.Timeout | undefined

  constructor(
    readonly conn: Conn,
    private readonly url: string,
    private readonly idleMs: number,
  ) {}

  headPromise(): Promise<HeadResult> {
    return new Promise((r) => (this.onHead = r))
  }

  /** Where the socket's next read goes (never empty). */
  target(): Uint8Array {
    if (this.inHead) return this.headLen < MAX_HEAD_BYTES ? this.conn.headBuf.subarray(this.headLen) : this.conn.headBuf
    if (this.remaining <= 0) return this.conn.headBuf // the next request's head
    // In place only while every byte still to hand over sits in place before it: bytes
    // waiting in a spare come first in the body, and handing them over copies them to
    // where the caller reads next, over anything read in place there meanwhile.
    const cur = this.cur
    if (cur && this.used < cur.length && this.ahead.every((v) => v.buffer === cur.buffer && v.byteOffset >= cur.byteOffset && v.byteOffset + v.length <= cur.byteOffset + this.used)) {
      const t = cur.subarray(this.used, this.used + Math.min(cur.length - this.used, this.remaining))
      // Never over bytes not handed over yet (they may sit in the caller's buffer).
      if (!this.ahead.some((v) => overlaps(v, t))) return t
    }
    if (!this.spare || this.spare.length - this.spareEnd < SPARE_READ_BYTES) {
      this.spare = this.freeSpare()
      this.spareEnd = 0
    }
    const t = this.spare.subarray(this.spareEnd, this.spareEnd + Math.min(SPARE_READ_BYTES, this.remaining))
    this.spareEnd += t.length
    return t
  }

  /** A spare buffer no bytes still to hand over sit in (one of the connection's, or a new one it keeps). */
  private freeSpare(): Buffer {
    const spares = this.conn.spares
    const free = spares.find((b) => b !== this.spare && !this.ahead.some((v) => v.buffer === b.buffer))
    if (free) return free
    const b = Buffer.allocUnsafeSlow(SPARE_BUFFER_BYTES) // its own ArrayBuffer: `ahead` views are told apart by it
    if (spares.length < MAX_SPARES) spares.push(b)
    return b
  }

  /** The socket read `n` bytes into `buf` (the last target()). Returns false to pause the socket. */
  received(n: number, buf: Uint8Array): boolean {
    this.gotBytes = true
    if (this.inHead) {
      if (buf.buffer !== this.conn.headBuf.buffer || buf.byteOffset !== this.conn.headBuf.byteOffset + this.headLen) {
        this.fail(new BootAgentError('EHTTP', `${this.url}: response bytes out of place (internal)`, { url: this.url }))
        return false
      }
      return this.headBytes(n)
    }
    this.remaining -= n
    const v = buf.subarray(0, n)
    if (this.cur && v.buffer === this.cur.buffer && v.byteOffset === this.cur.byteOffset + this.used) this.used += n
    this.ahead.push(v)
    this.aheadBytes += n
    const w = this.waiting
    if (w) {
      this.waiting = undefined
      clearTimeout(this.idle)
      w.resolve(this.deliver(w.into))
    }
    this.paused = this.remaining <= 0 || this.aheadBytes >= MAX_AHEAD_BYTES
    return !this.paused
  }

  /** Hands the first bytes ahead to `into` (in place when they already are there). */
  private deliver(into: Uint8Array): number {
    let k = 0
    while (this.ahead.length && k < into.length) {
      const v = this.ahead[0]!
      const take = Math.min(v.length, into.length - k)
      if (v.buffer !== into.buffer || v.byteOffset !== into.byteOffset + k) into.set(v.subarray(0, take), k)
      k += take
      if (take === v.length) this.ahead.shift()
      else this.ahead[0] = v.subarray(take)
    }
    this.aheadBytes -= k
    this.unread -= k
    // Further reads continue in `into`, after what it holds now (and after bytes already read in place there).
    this.used = this.cur === into ? Math.max(this.used, k) : k
    this.cur = into
    return k
  }

  private headBytes(n: number): boolean {
    const head = this.conn.headBuf
    const from = Math.max(0, this.headLen - 3)
    this.headLen += n
    const end = head.subarray(0, this.headLen).indexOf(HEAD_END, from)
    if (end < 0) {
      if (this.headLen >= head.length) this.fail(new BootAgentError('EHTTP', `${this.url}: response head larger than ${MAX_HEAD_BYTES} bytes`, { url: this.url }))
      return true
    }
    const lines = head.toString('latin1', 0, end).split('\r\n')
    const m = STATUS_LINE.exec(lines[0] ?? '')
    if (!m) {
      this.fail(new BootAgentError('EHTTP', `${this.url}: not an HTTP/1.x response: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`, { url: this.url }))
      return false
    }
    const headers = new Map<string, string>()
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      if (colon <= 0) continue
      const k = line.slice(0, colon).trim().toLowerCase()
      const v = line.slice(colon + 1).trim()
      const prev = headers.get(k)
      if (prev !== undefined && k === 'content-length' && prev !== v) {
        this.fail(new BootAgentError('EHTTP', `${this.url}: conflicting Content-Length headers ${prev} and ${v}`, { url: this.url }))
        return false
      }
      headers.set(k, prev === undefined || k === 'content-length' ? v : `${prev}, ${v}`)
    }
    // Body bytes that came with the head (copied: the head buffer serves the next request).
    const rest = Buffer.from(head.subarray(end + 4, this.headLen))
    if (rest.length) {
      this.ahead.push(rest)
      this.aheadBytes += rest.length
    }
    this.inHead = false
    const cb = this.onHead
    this.onHead = undefined
    cb?.({ kind: 'head', status: Number(m[1]), headers })
    this.paused = true // until the caller reads (or gives up on an error status)
    return false
  }

  /** Sets the body length once the head is accepted; bytes already received count. */
  startBody(length: number): void {
    this.unread = length
    this.remaining = length - this.aheadBytes
  }

  read(into: Uint8Array): Promise<number> {
    if (this.error !== undefined) return Promise.reject(this.error)
    if (this.unread <= 0 || into.length === 0) return Promise.resolve(0)
    if (this.aheadBytes > 0) {
      const n = this.deliver(into)
      this.resumeIfRoom()
      return Promise.resolve(n)
    }
    if (this.conn.closed) return Promise.reject(this.shortBody())
    this.cur = into
    this.used = 0
    return new Promise<number>((resolve, reject) => {
      this.waiting = { into, resolve, reject }
      this.idle = setTimeout(() => this.fail(new BootAgentError('EIDLE', `${this.url} sent nothing for ${this.idleMs} ms`, { url: this.url })), this.idleMs)
      this.resumeIfRoom()
    })
  }

  private resumeIfRoom(): void {
    if (this.paused && this.remaining > 0 && this.aheadBytes < MAX_AHEAD_BYTES) {
      this.paused = false
      this.conn.sock.resume()
    }
  }

  private shortBody(how = 'closed'): BootAgentError {
    return new BootAgentError('ETRUNCATED', `${this.url}: connection ${how} with ${this.remaining} byte(s) of the body still to come`, { url: this.url })
  }

  /** The socket failed: within the body a reset is a body cut short (ETRUNCATED, saying how much), like a close. */
  socketError(e: Error): void {
    if (!this.inHead && this.remaining > 0 && isErrno(e, 'ECONNRESET', 'EPIPE')) this.fail(this.shortBody('reset'))
    else this.fail(e)
  }

  /** The connection ended or closed. */
  ended(): void {
    if (this.inHead) {
      this.fail(new BootAgentError('ECONNRESET', `${this.url}: connection closed before a response`, { url: this.url }))
    } else if (this.remaining > 0) {
      this.fail(this.shortBody())
    }
  }

  fail(e: unknown): void {
    this.error ??= e
    clearTimeout(this.idle)
    this.conn.sock.destroy()
    const cb = this.onHead
    this.onHead = undefined
    cb?.({ kind: 'error', error: this.error })
    const w = this.waiting
    this.waiting = undefined
    w?.reject(this.error)
  }

  /** Whether a failure came before the server sent anything (a stale pooled connection). */
  get silent(): boolean {
    return !this.gotBytes
  }

  done(): boolean {
    return this.error === undefined && this.unread <= 0 && this.remaining <= 0
  }
}

const connect = (u: URL, origin: string): Promise<Conn> =>
  new Promise((resolve, reject) => {
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1')
    const c: Conn = new Conn(host, Number(u.port || 80), origin, () => {
      c.sock.off('error', onErr)
      resolve(c)
    })
    const onErr = (e: Error) => reject(e)
    c.sock.once('error', onErr)
  })

const takeConn = async (u: URL, origin: string): Promise<{ conn: Conn; reused: boolean }> => {
  const list = pool.get(origin)
  while (list?.length) {
    const c = list.pop()!
    if (c.idleTimer) clearTimeout(c.idleTimer)
    if (c.closed || c.sock.destroyed) continue
    c.sock.ref()
    return { conn: c, reused: true }
  }
  return { conn: await connect(u, origin), reused: false }
}

const translate = (e: unknown, url: string): unknown => {
  if (e instanceof BootAgentError) return e
  const code = (e as { code?: unknown })?.code
  return new BootAgentError(typeof code === 'string' ? foreignCode(code) : 'ENETWORK', `${url}: ${(e as Error)?.message ?? String(e)}`, { url }, { cause: e })
}

/**
 * GET `url` (bytes [start, end) when a range is given) with the body read
 * into the caller's buffers; `undefined` when this answer needs node-fetch
 * instead (not http:, a redirect, no Content-Length, a Transfer-Encoding).
 */
export const directGet = async (url: string, range: { start: number; end: number } | undefined, opts: RequestOptions = {}): Promise<DirectBody | undefined> => {
  const u = new URL(url)
  if (u.protocol !== 'http:' || u.username || u.password) return undefined
  if (opts.signal?.aborted) throw opts.signal.reason
  const origin = `${u.hostname}:${u.port || 80}`
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS
  const headersMs = opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS
  for (let attempt = 0; ; attempt++) {
    let conn: Conn
    let reused: boolean
    try {
      ;({ conn, reused } = await takeConn(u, origin))
    } catch (e) {
      throw translate(e, url)
    }
    const req = new Req(conn, url, idleMs)
    conn.req = req
    const headP = req.headPromise()
    const onAbort = () => req.fail(opts.signal?.reason ?? new BootAgentError('EABORT', 'aborted'))
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    const timer = setTimeout(() => req.fail(new BootAgentError('EIDLE', `no response from ${url} within ${headersMs} ms`, { url })), headersMs)
    const hostHeader = u.port ? `${u.hostname}:${u.port}` : u.hostname
    conn.sock.write(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${hostHeader}\r\nUser-Agent: boot-agent\r\nAccept-Encoding: identity\r\n` +
        (range ? `Range: bytes=${range.start}-${range.end - 1}\r\n` : '') +
        Object.entries({ ...authHeaders(url, opts.bearer), ...nodeHeaders(opts.nodeId) }).map(([k, v]) => `${k}: ${v}\r\n`).join('') +
        'Connection: keep-alive\r\n\r\n',
    )
    conn.sock.resume()
    const h = await headP
    clearTimeout(timer)
    const cleanup = () => opts.signal?.removeEventListener('abort', onAbort)
    if (h.kind === 'error') {
      cleanup()
      if (opts.signal?.aborted) throw opts.signal.reason
      if (reused && req.silent && attempt === 0) continue // the server closed our idle connection: once more on a new one
      throw translate(h.error, url)
    }
    const { status, headers } = h
    const closeAfter = /(^|,)\s*close\s*(,|$)/i.test(headers.get('connection') ?? '')
    const giveUp = (): undefined => {
      cleanup()
      conn.req = undefined
      conn.sock.destroy()
      return undefined
    }
    if (status !== 200 && status !== 206) {
      if (status >= 300 && status < 400) return giveUp() // node-fetch follows redirects
      cleanup()
      conn.sock.destroy()
      throw statusError(status, headers.get('retry-after'), url)
    }
    const lenHeader = headers.get('content-length')
    if (headers.has('transfer-encoding') || lenHeader === undefined || !/^\d{1,16}$/.test(lenHeader)) return giveUp()
    const length = Number(lenHeader)
    let start = 0
    let total: number | undefined = status === 200 ? length : undefined
    if (status === 206) {
      try {
        ;({ start, total } = partialContent(url, range, headers.get('content-range'), length))
      } catch (e) {
        cleanup()
        conn.sock.destroy()
        throw e
      }
    }
    req.startBody(length)
    let finished = false
    const finish = (keep: boolean) => {
      if (finished) return
      finished = true
      cleanup()
      if (keep && !closeAfter && req.done()) release(conn)
      else {
        conn.req = undefined
        conn.sock.destroy()
      }
    }
    if (length === 0) finish(true)
    return {
      url,
      status,
      ranged: status === 206,
      start,
      length,
      total,
      read: async (into) => {
        try {
          const n = await req.read(into)
          if (req.done()) finish(true)
          return n
        } catch (e) {
          finish(false)
          if (opts.signal?.aborted) throw opts.signal.reason
          throw translate(e, url)
        }
      },
      cancel: () => finish(req.done()),
    }
  }
}
