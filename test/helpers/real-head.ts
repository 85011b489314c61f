/**
 * The real head node (agent/head/server.ts `startHead`) for the node side's
 * tests: started in this process on 127.0.0.1 with a temporary store and a
 * nodes file listing the given nodes. What a test reads is what the head
 * really did:
 *
 * - `events()`: the events in the head's own event store
 *   (`<store>/events/<node>.jsonl`), one per id, in the order stored;
 * - `received()`: those, plus every event the head answered as a duplicate
 *   (an id it already had, resent): a pass-through in front of the head,
 *   forwarding each request and its answer unchanged, notes the ids of every
 *   batch answered 200 (the head keeps no list of the duplicates it dropped,
 *   and the tests check there were none). Built from the store so that a
 *   batch stored but not yet answered is never taken for a duplicate;
 * - `down()` / `up()`: the head really stopped (connections dropped, as in a
 *   crash) and started again on the same store and port.
 *
 * A head that must answer with an error on purpose goes behind
 * test/helpers/fault-proxy.ts.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer, request, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startHead, type Head } from '../../agent/head/server.js'
import type { EventEnvelope, EventKind } from '../../agent/protocol/event.js'
import { writeNodes } from './head-fixtures.js'

/** A stored event read back as plain JSON: the tests look at its fields by name. */
export type StoredEvent = EventEnvelope<EventKind, Record<string, unknown>>

export interface TestHead {
  /** Where nodes send their events (the pass-through in front of the head). */
  url: string
  /** Stored events, one per id. */
  events(): StoredEvent[]
  /** The stored events and every duplicate the head was sent and dropped. */
  received(): StoredEvent[]
  /** Stops the head and its pass-through (new connections are refused). */
  down(): Promise<void>
  /** Starts them again, same store, same ports. */
  up(): Promise<void>
  /** Stops everything and removes the store. */
  stop(): Promise<void>
}

const body = (m: IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    m.on('data', (c: Buffer) => chunks.push(c))
    m.on('end', () => resolve(Buffer.concat(chunks)))
    m.on('error', reject)
  })

const listen = (server: Server, port: number): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port))
  })

/** Starts a real head node that knows `nodes`. */
export const startTestHead = async (nodes: readonly string[]): Promise<TestHead> => {
  const dir = mkdtempSync(join(tmpdir(), 'ba-test-head-'))
  const store = join(dir, 'store')
  const nodesFile = await writeNodes(join(dir, 'nodes.json'), { schema: 1, nodes: Object.fromEntries(nodes.map((n) => [n, {}])) })
  let head: Head | undefined = await startHead({ store, nodes: nodesFile })
  const headPort = head.port
  /** Ids of the batches answered 200, and the events among them whose id came again. */
  const seen = new Set<string>()
  const duplicates: StoredEvent[] = []

  const tap = createServer((req, res) => {
    void body(req).then((sent) => {
      const fwd = request({ host: '127.0.0.1', port: headPort, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        void body(answer).then((text) => {
          if (req.method === 'POST' && answer.statusCode === 200) {
            for (const e of (JSON.parse(sent.toString('utf8')) as { events: StoredEvent[] }).events) {
              if (seen.has(e.id)) duplicates.push(e)
              else seen.add(e.id)
            }
          }
          res.writeHead(answer.statusCode ?? 502, answer.headers).end(text)
        })
      })
      // The head went away mid-request: so does the answer.
      fwd.on('error', () => res.destroy())
      fwd.end(sent)
    })
  })
  const tapPort = await listen(tap, 0)
  let tapUp = true

  const down = async (): Promise<void> => {
    if (tapUp) {
      tapUp = false
      const closed = new Promise<void>((r) => tap.close(() => r()))
      tap.closeAllConnections()
      await closed
    }
    await head?.close({ abort: true })
    head = undefined
  }

  const events = (): StoredEvent[] => {
    const eventsDir = join(store, 'events')
    return readdirSync(eventsDir)
      .filter((f) => f.endsWith('.jsonl'))
      .sort()
      .flatMap((f) => readFileSync(join(eventsDir, f), 'utf8').split('\n'))
      // Only whole lines: one being appended right now is read next time.
      .flatMap((line) => {
        try {
          return line ? [JSON.parse(line) as StoredEvent] : []
        } catch {
          return []
        }
      })
  }

  return {
    url: `http://127.0.0.1:${tapPort}`,
    events,
    received: () => [...events(), ...duplicates],
    down,
    up: async () => {
      head ??= await startHead({ store, nodes: nodesFile, listen: `127.0.0.1:${headPort}` })
      if (!tapUp) {
        await listen(tap, tapPort)
        tapUp = true
      }
    },
    stop: async () => {
      await down()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
