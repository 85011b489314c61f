import t from 'tap'
import { appendFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeEvent } from '../../agent/protocol/event.js'
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

t.test('a line torn by a crash (never acknowledged) is cut at start, the rest kept', async (t) => {
  const dir = t.testdir()
  const log = new EventLog(dir)
  await log.open()
  const a = makeEvent('status', 'n1', {})
  await log.append('n1', [a])
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
