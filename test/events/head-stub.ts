/**
 * A minimal head node for the daemon's tests (node:http on loopback): it
 * implements only `POST /v1/nodes/{node}/events` as docs/protocol.md says —
 * 200 {accepted, duplicates}, one copy per event id — and records every POST,
 * so tests can count duplicates the server had to drop. The reference head
 * node (`boot-agent head`) is built in parallel; this stands in until then.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { AgentEvent } from '../../agent/protocol/event.js'

export interface HeadStub {
  url: string
  port: number
  /** Stored events, one per id, in arrival order. */
  events(): AgentEvent[]
  /** Every event received, duplicates included. */
  received(): AgentEvent[]
  posts(): number
  /** Answer the next N POSTs with this status instead. */
  failNext(n: number, status: number): void
  /** Stop listening (the port is kept for start()). */
  down(): Promise<void>
  /** Listen again on the same port. */
  up(): Promise<void>
  stop(): Promise<void>
}

export const startHeadStub = async (port = 0): Promise<HeadStub> => {
  const stored = new Map<string, AgentEvent>()
  const all: AgentEvent[] = []
  let posts = 0
  let failing = 0
  let failStatus = 503
  const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void => {
    const m = /^\/v1\/nodes\/([^/]+)\/events$/.exec(req.url ?? '')
    if (req.method !== 'POST' || !m) {
      res.writeHead(404).end()
      return
    }
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      posts++
      if (failing > 0) {
        failing--
        res.writeHead(failStatus, { 'content-type': 'text/plain' }).end('failing on purpose')
        return
      }
      let body: unknown
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
      } catch {
        res.writeHead(400).end('not JSON')
        return
      }
      const events = (body as { events?: unknown }).events
      if (!Array.isArray(events)) {
        res.writeHead(400).end('no events')
        return
      }
      let accepted = 0
      let duplicates = 0
      for (const e of events as AgentEvent[]) {
        all.push(e)
        if (stored.has(e.id)) duplicates++
        else {
          stored.set(e.id, e)
          accepted++
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted, duplicates }))
    })
  }
  let server: Server = createServer(handler)
  const listen = (p: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(p, '127.0.0.1', () => resolve((server.address() as AddressInfo).port))
    })
  const actual = await listen(port)
  let listening = true
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      if (!listening) return resolve()
      listening = false
      server.closeAllConnections()
      server.close(() => resolve())
    })
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    events: () => [...stored.values()],
    received: () => [...all],
    posts: () => posts,
    failNext: (n, status) => {
      failing = n
      failStatus = status
    },
    down: close,
    up: async () => {
      if (listening) return
      server = createServer(handler)
      await listen(actual)
      listening = true
    },
    stop: close,
  }
}
