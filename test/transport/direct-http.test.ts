/**
 * direct-http.ts against a scripted HTTP server (node:net) — a stand-in on
 * purpose: these are protocol edge cases (stale keep-alive connections,
 * oversized or conflicting headers, bodies cut short, stalls) that nginx
 * cannot be made to produce. Real downloads through the same code against
 * nginx and the fault proxy are in fetch-image, faults, kill9 and delta tests.
 */
import t, { type Test } from 'tap'
import { createServer, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { BootAgentError, HttpError } from '../../agent/core/errors.js'
import { closeIdleConnections, directGet, MAX_HEAD_BYTES, MAX_SPARES, type DirectBody } from '../../agent/transport/direct-http.js'

type Handler = (req: string, sock: Socket, n: number) => void

/** A server answering each request (head text) through `handler`; counts connections and requests. */
const serve = async (t: Test, handler: Handler): Promise<{ url: string; connections: () => number; requests: () => string[] }> => {
  let conns = 0
  const reqs: string[] = []
  const socks = new Set<Socket>()
  const srv = createServer((sock) => {
    conns++
    socks.add(sock)
    sock.on('close', () => socks.delete(sock))
    sock.on('error', () => undefined)
    let buf = ''
    sock.on('data', (d) => {
      buf += d.toString('latin1')
      let i: number
      while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, i)
        buf = buf.slice(i + 4)
        reqs.push(head)
        handler(head, sock, reqs.length)
      }
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  t.teardown(async () => {
    closeIdleConnections()
    for (const s of socks) s.destroy()
    await new Promise((r) => srv.close(r))
  })
  const port = (srv.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}/img`, connections: () => conns, requests: () => reqs }
}

/** Reads a whole body the way the downloader does: successive reads into one buffer, each after the last. */
const readAll = async (b: DirectBody, size: number): Promise<Buffer> => {
  const out = Buffer.alloc(size + 16)
  let n = 0
  for (;;) {
    const r = await b.read(out.subarray(n, n + 1000 + (n % 7919)))
    if (r === 0) break
    n += r
  }
  return out.subarray(0, n)
}

const rangeOf = (req: string): [number, number] | undefined => {
  const m = /range: bytes=(\d+)-(\d+)/i.exec(req)
  return m ? [Number(m[1]), Number(m[2])] : undefined
}

/** Answers Range requests for `data` like a static file server (206, Content-Range, keep-alive). */
const fileServer = (data: Buffer, extraHeaders = ''): Handler => (req, sock) => {
  const r = rangeOf(req)
  if (!r) {
    sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\n${extraHeaders}\r\n`)
    sock.write(data)
    return
  }
  const [a, b] = r
  sock.write(`HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${a}-${b}/${data.length}\r\nContent-Length: ${b - a + 1}\r\n${extraHeaders}\r\n`)
  sock.write(data.subarray(a, b + 1))
}

const rejectsWith = async (t: Test, p: Promise<unknown>, code: string, re: RegExp): Promise<void> => {
  const e = await p.then(() => undefined, (x: unknown) => x)
  t.ok(e instanceof BootAgentError, `an error (${String(e)})`)
  t.equal((e as BootAgentError).code, code)
  t.match((e as Error).message, re)
}

t.test('a range arrives whole and exact, read in pieces into the caller buffer', async (t) => {
  const data = randomBytes(3 * 1024 * 1024 + 17)
  const s = await serve(t, fileServer(data))
  const b = await directGet(s.url, { start: 1000, end: 2_500_000 })
  t.ok(b)
  t.equal(b!.status, 206)
  t.equal(b!.ranged, true)
  t.equal(b!.start, 1000)
  t.equal(b!.total, data.length)
  t.same(await readAll(b!, 2_499_000), data.subarray(1000, 2_500_000))
  t.equal(await b!.read(Buffer.alloc(10)), 0, 'then the end')
})

t.test('a slow reader: bytes read ahead land in a few reused spare buffers, and arrive exact', async (t) => {
  // The reader takes 64 KiB at a time and yields between reads, so the socket
  // reads ahead into spare buffers (up to 1 MiB) that are then copied out.
  // Each spare must be reused only once its bytes were handed over; a fresh
  // one per 256 KiB was garbage that grew the download's peak RSS.
  const data = randomBytes(12 * 1024 * 1024 + 4321)
  const s = await serve(t, fileServer(data))
  const SPARE = 256 * 1024
  let spares = 0
  const slow = Buffer.allocUnsafeSlow
  const unsafe = Buffer.allocUnsafe
  Buffer.allocUnsafeSlow = (n: number) => ((spares += n === SPARE ? 1 : 0), slow(n))
  Buffer.allocUnsafe = (n: number) => ((spares += n === SPARE ? 1 : 0), unsafe(n))
  t.teardown(() => {
    Buffer.allocUnsafeSlow = slow
    Buffer.allocUnsafe = unsafe
  })
  for (let round = 0; round < 2; round++) {
    const b = await directGet(s.url, undefined)
    const out = Buffer.alloc(data.length)
    let n = 0
    for (;;) {
      const r = await b!.read(out.subarray(n, n + 64 * 1024))
      if (r === 0) break
      n += r
      await new Promise((r) => setImmediate(r))
    }
    t.equal(n, data.length, `round ${round}: every byte`)
    t.ok(out.equals(data), `round ${round}: the bytes in order`)
  }
  t.ok(spares <= MAX_SPARES, `${spares} spare buffers allocated for 24 MiB read ahead of a slow reader on one connection (≤ ${MAX_SPARES}, the most bytes ahead can pin at once; a fresh one per 256 KiB would be 96)`)
})

t.test('body bytes sent in the same packet as the head are kept', async (t) => {
  const data = Buffer.from('0123456789abcdef')
  const s = await serve(t, (_req, sock) => sock.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\nConnection: close\r\n\r\n`), data])))
  const b = await directGet(s.url, undefined)
  t.same(await readAll(b!, data.length), data)
})

t.test('connections are kept alive and reused; Connection: close is honoured', async (t) => {
  const data = randomBytes(200_000)
  const s = await serve(t, fileServer(data))
  for (let i = 0; i < 3; i++) {
    const b = await directGet(s.url, { start: i * 1000, end: i * 1000 + 50_000 })
    t.same(await readAll(b!, 50_000), data.subarray(i * 1000, i * 1000 + 50_000))
  }
  t.equal(s.connections(), 1, 'three requests, one connection')
  const c = await serve(t, fileServer(data, 'Connection: close\r\n'))
  for (let i = 0; i < 2; i++) await readAll((await directGet(c.url, { start: 0, end: 10 }))!, 10)
  t.equal(c.connections(), 2, 'a new connection after Connection: close')
})

t.test('a pooled connection the server closed meanwhile is replaced, once, without an error', async (t) => {
  const data = randomBytes(10_000)
  let dropped!: () => void
  const droppedP = new Promise<void>((r) => (dropped = r))
  const s = await serve(t, (req, sock, n) => {
    fileServer(data)(req, sock, n)
    if (n === 1) {
      setTimeout(() => {
        sock.destroy() // the server drops the idle connection
        dropped()
      }, 20)
    }
  })
  await readAll((await directGet(s.url, { start: 0, end: 100 }))!, 100)
  await droppedP
  const b = await directGet(s.url, { start: 100, end: 300 })
  t.same(await readAll(b!, 200), data.subarray(100, 300))
  t.equal(s.connections(), 2)
})

t.test('answers it does not take fall back to the general client (undefined)', async (t) => {
  const chunked = await serve(t, (_r, sock) => sock.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'))
  t.equal(await directGet(chunked.url, undefined), undefined, 'chunked body')
  const redirect = await serve(t, (_r, sock) => sock.end('HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n'))
  t.equal(await directGet(redirect.url, undefined), undefined, 'redirect')
  const unsized = await serve(t, (_r, sock) => sock.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc'))
  t.equal(await directGet(unsized.url, undefined), undefined, 'no Content-Length')
  t.equal(await directGet('https://127.0.0.1:1/img', undefined), undefined, 'https')
})

t.test('error statuses are HttpErrors with Retry-After', async (t) => {
  const s = await serve(t, (_r, sock) => sock.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy'))
  const e = await directGet(s.url, { start: 0, end: 10 }).then(() => undefined, (x: unknown) => x)
  t.ok(e instanceof HttpError)
  t.equal((e as HttpError).status, 503)
  t.equal((e as HttpError).retryAfterMs, 7000)
})

t.test('bad answers are clear errors', async (t) => {
  const huge = await serve(t, (_r, sock) => sock.end(`HTTP/1.1 200 OK\r\nX-Pad: ${'a'.repeat(MAX_HEAD_BYTES)}\r\nContent-Length: 1\r\n\r\nx`))
  await rejectsWith(t, directGet(huge.url, undefined), 'EHTTP', /response head larger than 65536 bytes/)
  const twoLengths = await serve(t, (_r, sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef'))
  await rejectsWith(t, directGet(twoLengths.url, undefined), 'EHTTP', /conflicting Content-Length headers 5 and 6/)
  const garbage = await serve(t, (_r, sock) => sock.end('SSH-2.0-OpenSSH_9.2\r\n\r\n'))
  await rejectsWith(t, directGet(garbage.url, undefined), 'EHTTP', /not an HTTP\/1.x response: "SSH-2.0/)
  const wrongRange = await serve(t, (_r, sock) => sock.end('HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/100\r\nContent-Length: 5\r\n\r\nabcde'))
  await rejectsWith(t, directGet(wrongRange.url, { start: 0, end: 5 }), 'ERANGE', /answered Range bytes=0-4 with Content-Range "bytes 5-9\/100"/)
  const nothing = await serve(t, (_r, sock) => sock.destroy())
  await rejectsWith(t, directGet(nothing.url, undefined), 'ECONNRESET', /connection closed before a response/)
})

t.test('a body cut short is ETRUNCATED, naming what is missing', async (t) => {
  const s = await serve(t, (_r, sock) => {
    sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n')
    sock.end(Buffer.alloc(40_000, 1))
  })
  const b = await directGet(s.url, undefined)
  await rejectsWith(t, readAll(b!, 100_000), 'ETRUNCATED', /connection closed with 60000 byte\(s\) of the body still to come/)
})

// A server or proxy that resets the connection mid-body (RST instead of FIN) came out
// as a bare "read ECONNRESET", saying neither that the body was cut short nor by how much.
t.test('a body cut short by a reset is ETRUNCATED too, naming what is missing and the reset', async (t) => {
  const s = await serve(t, (_r, sock) => {
    sock.write('HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99999/100000\r\nContent-Length: 100000\r\n\r\n')
    sock.write(Buffer.alloc(40_000, 1), () => setTimeout(() => sock.resetAndDestroy(), 50))
  })
  const b = await directGet(s.url, { start: 0, end: 100_000 })
  await rejectsWith(t, readAll(b!, 100_000), 'ETRUNCATED', /connection reset with 60000 byte\(s\) of the body still to come/)
})

t.test('a stall is EIDLE; an abort rejects with its reason', async (t) => {
  const s = await serve(t, (_r, sock) => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc'))
  const b = await directGet(s.url, undefined, { idleTimeoutMs: 200 })
  t.equal(await b!.read(Buffer.alloc(100)), 3)
  await rejectsWith(t, b!.read(Buffer.alloc(100)), 'EIDLE', /sent nothing for 200 ms/)
  const ac = new AbortController()
  const b2 = await directGet(s.url, undefined, { signal: ac.signal })
  await b2!.read(Buffer.alloc(100))
  const p = b2!.read(Buffer.alloc(100))
  const why = new BootAgentError('EABORT', 'test abort')
  ac.abort(why)
  t.equal(await p.then(() => undefined, (x: unknown) => x), why)
  const late = await serve(t, () => undefined)
  await rejectsWith(t, directGet(late.url, undefined, { headersTimeoutMs: 200 }), 'EIDLE', /no response from .* within 200 ms/)
})
