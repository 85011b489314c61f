/**
 * A small fault-injecting HTTP proxy to put in front of the real nginx: each
 * request takes the next scripted fault (then passes through once the
 * script is used up), so a test can say "500, then a reset after 100 KiB,
 * then fine" and count what was actually sent.
 */
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export type Fault =
  | { kind: 'pass' }
  /** Answer with this status (and Retry-After seconds) without asking nginx. */
  | { kind: 'status'; status: number; retryAfterS?: number }
  /** Forward, send `afterBytes` of the body, then close (Content-Length kept: the client sees a premature end). */
  | { kind: 'truncate'; afterBytes: number }
  /** Forward, send `afterBytes`, then reset the connection (RST). */
  | { kind: 'reset'; afterBytes: number }
  /** Forward without the Range header (a server that ignores Range). */
  | { kind: 'ignore-range' }
  /** Forward, send `afterBytes`, then go silent (the client's idle timeout must fire). */
  | { kind: 'stall'; afterBytes: number }

export interface ProxiedRequest {
  path: string
  range: string
  fault: Fault['kind']
  status: number
  /** Body bytes the proxy sent to the client. */
  bytes: number
}

export interface FaultProxy {
  url: string
  requests: ProxiedRequest[]
  /** Faults still to be used, in order. */
  script: Fault[]
  /** Applied to every request once the script is used up (default pass). */
  always: Fault
  stop(): Promise<void>
}

export const startFaultProxy = async (upstream: string, script: Fault[] = [], always: Fault = { kind: 'pass' }): Promise<FaultProxy> => {
  const up = new URL(upstream)
  const sockets = new Set<Socket>()
  const proxy: FaultProxy = { url: '', requests: [], script: [...script], always, stop: async () => undefined }
  const server = http.createServer((req, res) => {
    const fault = proxy.script.shift() ?? proxy.always
    const rec: ProxiedRequest = { path: req.url ?? '', range: String(req.headers.range ?? ''), fault: fault.kind, status: 0, bytes: 0 }
    proxy.requests.push(rec)
    if (fault.kind === 'status') {
      rec.status = fault.status
      res.writeHead(fault.status, fault.retryAfterS !== undefined ? { 'retry-after': String(fault.retryAfterS) } : {})
      res.end(`injected ${fault.status}\n`)
      return
    }
    const headers = { ...req.headers }
    if (fault.kind === 'ignore-range') delete headers.range
    const upReq = http.request({ host: up.hostname, port: up.port, path: req.url, method: req.method, headers }, (upRes) => {
      rec.status = upRes.statusCode ?? 0
      res.writeHead(upRes.statusCode ?? 502, upRes.headers)
      const limit = 'afterBytes' in fault ? fault.afterBytes : Infinity
      upRes.on('data', (d: Buffer) => {
        if (rec.bytes >= limit) return
        const part = rec.bytes + d.length > limit ? d.subarray(0, limit - rec.bytes) : d
        rec.bytes += part.length
        res.write(part)
        if (rec.bytes >= limit) {
          upRes.destroy()
          if (fault.kind === 'truncate') setImmediate(() => res.socket?.end())
          else if (fault.kind === 'reset') setImmediate(() => res.socket?.resetAndDestroy())
          // stall: keep the socket open and silent
        }
      })
      upRes.on('end', () => res.end())
      upRes.on('error', () => undefined)
    })
    upReq.on('error', () => {
      if (!res.headersSent) res.writeHead(502)
      res.end()
    })
    req.pipe(upReq)
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  proxy.stop = async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((r) => server.close(() => r()))
  }
  return proxy
}
