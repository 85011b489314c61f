/**
 * Group commit in the head's event store (issue 20): many nodes' concurrent
 * batches share one durable journal append (one fdatasync), every event is
 * in its node's file exactly once, an acknowledged event that only reached
 * the journal (a crash before its node file) is restored at open, and a
 * journal that cannot be written acknowledges nothing.
 */
import t from 'tap'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeEvent } from '../../agent/protocol/event.js'
import { EventLog } from '../../agent/head/event-log.js'
import { JOURNAL_FILE } from '../../agent/head/group-commit.js'

const linesOf = async (path: string): Promise<string[]> => (await readFile(path, 'utf8').catch(() => '')).split('\n').filter(Boolean)

t.test('300 nodes appending at once: a few fdatasyncs, not 300; each event stored once, in its node file', async (t) => {
  const dir = t.testdir()
  const log = new EventLog(dir)
  await log.open()
  const nodes = Array.from({ length: 300 }, (_, i) => `n${String(i).padStart(4, '0')}`)
  const events = nodes.map((n) => makeEvent('boot', n, { record: { result: 'ok' } }))
  const results = await Promise.all(nodes.map((n, i) => log.append(n, [events[i]!])))
  t.ok(results.every((r) => r.accepted.length === 1 && r.duplicates === 0), 'every batch acknowledged')
  const g = log.groupStats()
  t.equal(g.batches, 300)
  t.ok(g.groups <= 30, `${g.groups} group fdatasyncs for 300 concurrent batches`)
  // Resent at once (at-least-once delivery): nothing stored twice.
  const again = await Promise.all(nodes.map((n, i) => log.append(n, [events[i]!])))
  t.ok(again.every((r) => r.accepted.length === 0 && r.duplicates === 1), 'resends are duplicates')
  await log.close()
  for (const [i, n] of nodes.entries()) {
    const lines = await linesOf(join(dir, `${n}.jsonl`))
    if (lines.length !== 1 || !lines[0]!.includes(events[i]!.id)) t.fail(`${n}: ${lines.length} lines`)
  }
  t.same(await linesOf(join(dir, JOURNAL_FILE)), [], 'the journal is emptied at close (node files synced)')
  const reopened = new EventLog(dir)
  t.match(await reopened.open(), { nodes: 300, events: 300 })
})

t.test('an acknowledged event only in the journal (crash before its node file) is restored at open, once', async (t) => {
  const dir = t.testdir()
  await mkdir(dir, { recursive: true })
  const kept = makeEvent('boot', 'n1', { record: { result: 'ok' } })
  const already = makeEvent('status', 'n2', {})
  await writeFile(join(dir, 'n2.jsonl'), JSON.stringify(already) + '\n')
  // The journal as a crash left it: two whole lines (acknowledged) and a torn one (never acknowledged).
  await writeFile(join(dir, JOURNAL_FILE), `${JSON.stringify(kept)}\n${JSON.stringify(already)}\n{"id":"torn`)
  const log = new EventLog(dir)
  const seen: string[] = []
  t.match(await log.open({ onReplay: (e) => seen.push(e.id) }), { events: 2 })
  t.same(seen.sort(), [kept.id, already.id].sort(), 'each event once')
  t.same(await linesOf(join(dir, 'n1.jsonl')), [JSON.stringify(kept)], 'restored to its node file')
  t.same(await linesOf(join(dir, 'n2.jsonl')), [JSON.stringify(already)], 'not written twice')
  t.same(await linesOf(join(dir, JOURNAL_FILE)), [], 'journal emptied after the repair')
  t.ok(log.has('n1', kept.id))
  await log.close()
})

t.test('a journal that cannot be written: the batch is refused, nothing stored, nothing counted', async (t) => {
  const dir = t.testdir()
  const log = new EventLog(dir)
  await log.open()
  await mkdir(join(dir, JOURNAL_FILE), { recursive: true }).catch(() => undefined)
  // The journal path is now a directory (after open emptied the file, it is replaced): appends fail.
  const e = makeEvent('status', 'n1', {})
  const err = await log.append('n1', [e]).catch((x: unknown) => x)
  t.ok(err instanceof Error, `refused: ${(err as Error).message}`)
  t.notOk(log.has('n1', e.id), 'not counted as stored')
  t.same(await linesOf(join(dir, 'n1.jsonl')), [], 'not in the node file')
})
