import t from 'tap'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  clearFlushIntent, FLUSH_FILE, HEARTBEAT_FILE, POSITION_FILE,
  readFlushIntent, readHeartbeat, readPosition, writeFlushIntent, writeHeartbeat, writePosition,
} from '../../agent/daemon/state.js'
import { makeEvent } from '../../agent/protocol/event.js'

t.test('a position round-trips, and a state dir made for it is private to root (0700)', async (t) => {
  const stateDir = join(t.testdir(), 'state')
  t.equal(await readPosition(stateDir), undefined, 'nothing written yet')
  const p = { bootId: 'b-1', seq: 42, lost: 3, time: '2026-01-01T00:00:00.000Z' }
  await writePosition(stateDir, p)
  t.same(await readPosition(stateDir), p)
  t.equal((await stat(stateDir)).mode & 0o777, 0o700)
  t.same(await readdir(stateDir), [POSITION_FILE], 'no temp file left beside it')
})

t.test('a position file without a boot id or an integer seq is no position; missing lost and time get defaults', async (t) => {
  const dir = t.testdir()
  for (const bad of ['not json', '[]', '{"seq":1}', '{"bootId":"b","seq":1.5}', '{"bootId":7,"seq":1}']) {
    await writeFile(join(dir, POSITION_FILE), bad)
    t.equal(await readPosition(dir), undefined, bad)
  }
  await writeFile(join(dir, POSITION_FILE), '{"bootId":"b","seq":9,"lost":"x"}')
  t.same(await readPosition(dir), { bootId: 'b', seq: 9, lost: 0, time: '' })
})

t.test('a heartbeat round-trips; one without a time or an event id is none; missing data reads as empty', async (t) => {
  const dir = t.testdir()
  const h = { time: '2026-01-01T00:00:00.000Z', eventId: 'e-1', data: { uptimeS: 5, image: { sha256: 'a'.repeat(64) } } }
  await writeHeartbeat(dir, h)
  t.same(await readHeartbeat(dir), h)
  await writeFile(join(dir, HEARTBEAT_FILE), '{"time":"t"}')
  t.equal(await readHeartbeat(dir), undefined)
  await writeFile(join(dir, HEARTBEAT_FILE), '{"time":"t","eventId":"e","data":null}')
  t.same(await readHeartbeat(dir), { time: 't', eventId: 'e', data: {} })
})

t.test('a flush intent round-trips its events, and clearing it removes the file (twice is fine)', async (t) => {
  const dir = t.testdir()
  const events = [
    makeEvent('squashfs-error', 'n1', { count: 2 }, { now: new Date('2026-01-01T00:00:00Z') }),
    makeEvent('lost', 'n1', { count: 1 }, { now: new Date('2026-01-01T00:00:01Z') }),
  ]
  await writeFlushIntent(dir, { bootId: 'b', seq: 10, lost: 1, events })
  t.same(await readFlushIntent(dir), { bootId: 'b', seq: 10, lost: 1, events })
  t.same(JSON.parse(await readFile(join(dir, FLUSH_FILE), 'utf8')).seq, 10)
  await clearFlushIntent(dir)
  t.equal(await readFlushIntent(dir), undefined)
  await t.resolves(clearFlushIntent(dir), 'clearing what is not there is no error')
})

t.test('a flush intent with one event that is not a valid event is ignored whole, never half-replayed', async (t) => {
  const dir = t.testdir()
  const good = makeEvent('lost', 'n1', { count: 1 })
  await writeFile(join(dir, FLUSH_FILE), JSON.stringify({ bootId: 'b', seq: 3, lost: 0, events: [good, { kind: 'nonsense' }] }))
  t.equal(await readFlushIntent(dir), undefined)
  await writeFile(join(dir, FLUSH_FILE), JSON.stringify({ bootId: 'b', seq: 3, events: 'x' }))
  t.equal(await readFlushIntent(dir), undefined)
  await writeFile(join(dir, FLUSH_FILE), JSON.stringify({ bootId: 'b', seq: 3, events: [good] }))
  t.same(await readFlushIntent(dir), { bootId: 'b', seq: 3, lost: 0, events: [good] }, 'a missing lost reads as 0')
})
