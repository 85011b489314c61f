import t from 'tap'
import { appendFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type AgentEvent, makeEvent } from '../../agent/protocol/event.js'
import { EventLog } from '../../agent/head/event-log.js'

t.test('events are stored once per id, across batches and restarts', async (t) => {
  const dir = t.testdir()
  const log = new EventLog(dir)
  await log.open()
  const a = makeEvent('status', 'n1', {})
  const b = makeEvent('boot', 'n1', { record: { result: 'ok' } })
  t.match(await log.append('n1', [a, b]), { accepted: [a, b], duplicates: 0 })
  t.match(await log.append('n1', [b, a]), { accepted: [], duplicates: 2 })
  await log.close()
  const again = new EventLog(dir)
  const replayed: string[] = []
  t.match(await again.open({ onReplay: (e) => replayed.push(e.id) }), { nodes: 1, events: 2, tornBytes: 0 })
  t.same(replayed, [a.id, b.id], 'replayed in order')
  const c = makeEvent('status', 'n1', {})
  t.match(await again.append('n1', [a, c]), { accepted: [c], duplicates: 1 })
  t.equal((await readFile(join(dir, 'n1.jsonl'), 'utf8')).trim().split('\n').length, 3)
})

t.test('concurrent batches for one node with the same events store each once', async (t) => {
  const log = new EventLog(t.testdir())
  await log.open()
  const events = Array.from({ length: 20 }, () => makeEvent('status', 'n1', {}))
  const results = await Promise.all(Array.from({ length: 10 }, () => log.append('n1', events)))
  t.equal(results.reduce((n, r) => n + r.accepted.length, 0), 20)
  t.equal(log.count('n1'), 20)
})

/** An open event log in `dir` with one event of n1 stored (returned as `a`). */
const logWithOne = async (dir: string): Promise<{ log: EventLog; a: AgentEvent }> => {
  const log = new EventLog(dir)
  await log.open()
  const a = makeEvent('status', 'n1', {})
  await log.append('n1', [a])
  return { log, a }
}

t.test('a line torn by a crash (never acknowledged) is cut at start, the rest kept', async (t) => {
  const dir = t.testdir()
  const { log, a } = await logWithOne(dir)
  await log.close()
  const torn = JSON.stringify(makeEvent('status', 'n1', {}))
  await appendFile(join(dir, 'n1.jsonl'), torn.slice(0, 40))
  const again = new EventLog(dir)
  t.match(await again.open(), { events: 1, tornBytes: 40 })
  t.equal(await readFile(join(dir, 'n1.jsonl'), 'utf8'), JSON.stringify(a) + '\n')
  const b = makeEvent('status', 'n1', {})
  await again.append('n1', [b])
  t.equal((await readFile(join(dir, 'n1.jsonl'), 'utf8')).split('\n').filter(Boolean).length, 2, 'appends continue on a clean line')
})

t.test('bytes past the last acknowledged batch (a failed append that could not be cut) are cut before the next append', async (t) => {
  const dir = t.testdir()
  const { log, a } = await logWithOne(dir)
  // What a failed append whose cut-back also failed leaves: part of a line, no newline.
  await appendFile(join(dir, 'n1.jsonl'), JSON.stringify(makeEvent('status', 'n1', {})).slice(0, 50))
  const b = makeEvent('status', 'n1', {})
  t.match(await log.append('n1', [b]), { accepted: [b] })
  t.equal(await readFile(join(dir, 'n1.jsonl'), 'utf8'), JSON.stringify(a) + '\n' + JSON.stringify(b) + '\n', 'the acknowledged event is on a line of its own')
  await log.close()
  const again = new EventLog(dir)
  t.match(await again.open(), { events: 2, tornBytes: 0 })
})

t.test('an event glued behind a torn prefix (a store written by an older head) is recovered at open, not skipped', async (t) => {
  const dir = t.testdir()
  const a = makeEvent('status', 'n1', {})
  const torn = JSON.stringify(makeEvent('boot', 'n1', { record: { result: 'ok', fallbacks: [{ kind: 'k', reason: 'r' }] } })).slice(0, 90)
  const b = makeEvent('status', 'n1', {})
  await appendFile(join(dir, 'n1.jsonl'), JSON.stringify(a) + '\n' + torn + JSON.stringify(b) + '\n' + '{"not an event"}\n')
  const log = new EventLog(dir)
  const ids: string[] = []
  t.match(await log.open({ onReplay: (e) => ids.push(e.id) }), { events: 2 })
  t.same(ids, [a.id, b.id], 'the glued event is replayed; a line with no event in it is still skipped')
  t.ok(log.has('n1', b.id))
})
