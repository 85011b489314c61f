/**
 * The head's event store on a real, tiny file system (issue #22, finding 1):
 * an event that does not fit is never acknowledged, nothing torn is left on
 * disk, the node keeps it spooled and delivers it once there is room, and
 * every acknowledged event survives a restart of the head.
 */
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HttpError, isErrno } from '../../agent/core/errors.js'
import { EventLog } from '../../agent/head/event-log.js'
import { startHead, type Head } from '../../agent/head/server.js'
import type { NodesConfig } from '../../agent/head/nodes-config.js'
import { makeEvent, type AgentEvent } from '../../agent/protocol/event.js'
import { Sender } from '../../agent/events/sender.js'
import { Spool } from '../../agent/events/spool.js'
import { gate } from '../helpers/capability.js'
import { PAGE_BYTES, tinyFs } from '../helpers/tiny-fs.js'

const FS_BYTES = 256 * 1024

const config: NodesConfig = { schema: 1, defaults: {}, architectures: {}, groups: {}, nodes: { n1: {} }, images: {} }

/** A boot event of about `bytes` bytes of JSON (fallback reasons are strings of at most 4096 characters). */
const bigEvent = (bytes: number): AgentEvent =>
  makeEvent('boot', 'n1', { record: { result: 'ok', fallbacks: Array.from({ length: Math.ceil(bytes / 4000) }, (_, i) => ({ kind: `k${i}`, reason: 'x'.repeat(4000) })) } })

const lines = async (path: string): Promise<string> => readFile(path, 'utf8').catch((e: unknown) => (isErrno(e, 'ENOENT') ? '' : Promise.reject(e)))

t.test('a full events file system: nothing torn, nothing acknowledged that is not stored, nothing lost', gate('root'), async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ba-full-events-'))
  let head: Head | undefined
  // Teardowns run last first: the head stops before its file system is unmounted.
  const fs = await tinyFs(t, FS_BYTES, 'events')
  t.teardown(async () => {
    await head?.close({ abort: true })
    await rm(dir, { recursive: true, force: true })
  })
  const eventsDir = fs.dir
  const start = async (): Promise<Head> => startHead({ store: join(dir, 'store'), nodes: config, eventsDir })
  head = await start()
  const logFile = join(eventsDir, 'n1.jsonl')

  // The node's side: a real spool and the real sender.
  const spool = new Spool(join(dir, 'spool'))
  const big = bigEvent(60_000)
  await spool.append(big)
  const sender = (s: Spool): Sender => new Sender({ server: head!.url, node: 'n1', spools: [s] })

  await fs.fill(2 * PAGE_BYTES)
  const refused = await sender(spool).flushOnce().then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(refused instanceof HttpError, 'the big event is not acknowledged')
  t.match(refused, { status: 503 }, 'answered 503: the sender keeps it and retries')
  t.equal((await spool.files()).length, 1, 'the node still has it spooled')
  const afterRefusal = await lines(logFile)
  t.ok(afterRefusal === '' || afterRefusal.endsWith('\n'), 'nothing torn on disk')
  t.notOk(afterRefusal.includes(big.id), 'no part of the refused event is stored')

  // A little room: a small event is acknowledged, on a clean line of its own.
  await fs.free(2 * PAGE_BYTES)
  const smallSpool = new Spool(join(dir, 'spool-small'))
  const small = makeEvent('status', 'n1', {})
  await smallSpool.append(small)
  t.match(await sender(smallSpool).flushOnce(), { sent: 1 }, 'the small event fits and is acknowledged')
  t.equal(await lines(logFile), JSON.stringify(small) + '\n', 'stored alone on a clean line')

  // Room again: the big event is delivered, exactly once.
  await fs.free()
  t.match(await sender(spool).flushOnce(), { sent: 1, duplicates: 0 })
  t.equal((await spool.files()).length, 0, 'delivered, so unspooled')
  t.match(await sender(spool).flushOnce(), { sent: 0 }, 'nothing left to send')

  // After a restart every acknowledged event is there, once.
  await head.close()
  head = await start()
  const ids: string[] = []
  const replay = new EventLog(eventsDir)
  t.match(await replay.open({ onReplay: (e) => ids.push(e.id) }), { tornBytes: 0 })
  t.same(ids, [small.id, big.id], 'both acknowledged events are stored, once each, in order')
  const text = await lines(logFile)
  t.equal(text.split('\n').filter(Boolean).length, 2, 'two lines, no duplicate')
  const res = await fetch(`${head.url}/v1/nodes/n1`)
  t.match(await res.json(), { events: 2 }, 'the restarted head counts both')
})
