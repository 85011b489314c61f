import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createServer } from 'node:http'
import { actOnFailure, bootEvents, type BootRecord, deliverBootEvents, EXIT_CODES, spoolEvents, writeBootRecord } from '../../agent/boot/handoff.js'
import { makeEvent } from '../../agent/protocol/event.js'
import type { Runner } from '../../agent/core/exec.js'
import { Spool } from '../../agent/events/spool.js'

const record = (over: Partial<BootRecord> = {}): BootRecord => ({
  schema: 1,
  node: 'n1',
  server: 'http://h',
  style: 'rwram',
  requestedStyle: 'disked',
  fallbacks: [{ kind: 'root-missing', reason: 'no root' }],
  image: { name: 'img', sha256: 'e'.repeat(64), size: 10 },
  cache: { spec: 'LABEL=c', hit: false, inRam: false },
  root: { spec: 'LABEL=r' },
  bytesFetched: 10,
  timings: { total: 5 },
  result: 'ok',
  spoolDir: '/x',
  time: '2026-01-01T00:00:00.000Z',
  ...over,
})

t.test('onfail maps to the documented exit codes; reboot waits, then runs the reboot command', async (t) => {
  t.equal(await actOnFailure('emergency', { rebootDelayMs: 0 }), EXIT_CODES.emergency)
  t.equal(await actOnFailure('shell', { rebootDelayMs: 0 }), EXIT_CODES.shell)
  const calls: string[] = []
  const run: Runner = async (cmd) => {
    calls.push(`run ${cmd}`)
    return { exitCode: 0, signal: null, stdout: '', stderr: '' }
  }
  const code = await actOnFailure('reboot', { rebootDelayMs: 1234, run, sleep: async (ms) => void calls.push(`sleep ${ms}`) })
  t.equal(code, EXIT_CODES.reboot)
  t.same(calls, ['sleep 1234', 'run reboot'], 'the delay comes first, so the console shows why')
})

t.test('outside an initramfs onfail=reboot exits 4 without rebooting', async (t) => {
  let ran = false
  const run: Runner = async () => {
    ran = true
    return { exitCode: 0, signal: null, stdout: '', stderr: '' }
  }
  t.equal(await actOnFailure('reboot', { rebootDelayMs: 0, run, mayReboot: false }), EXIT_CODES.reboot)
  t.notOk(ran)
})

t.test('a boot record becomes one fallback event per fallback, then boot or boot-failed, tied to the digest', async (t) => {
  const ok = bootEvents(record())
  t.same(ok.map((e) => e.kind), ['fallback', 'boot'])
  t.same(ok[0]?.image, { name: 'img', sha256: 'e'.repeat(64) })
  t.match(ok[0]?.data, { kind: 'root-missing', reason: 'no root' })
  const failed = bootEvents(record({ result: 'failed', fallbacks: [], error: { code: 'EUNPACK', message: 'x' }, action: 'emergency' }))
  t.same(failed.map((e) => e.kind), ['boot-failed'])
  t.match(failed[0]?.data, { error: { code: 'EUNPACK' }, action: 'emergency' })
})

t.test('the record is written where the daemon reads it, and events are spooled durably', async (t) => {
  const dir = t.testdir()
  const path = await writeBootRecord(join(dir, 'run'), record())
  t.equal(path, join(dir, 'run', 'boot-record.json'))
  t.match(JSON.parse(await readFile(path, 'utf8')), { schema: 1, node: 'n1', result: 'ok' })
  t.equal(await spoolEvents(join(dir, 'spool'), bootEvents(record())), true)
  t.same((await new Spool(join(dir, 'spool')).peek(10)).map((s) => s.event.kind), ['fallback', 'boot'])
  // (a path under a regular file: mkdir -p under /proc loops forever in Node 20)
  await writeFile(join(dir, 'not-a-dir'), 'x')
  t.equal(await spoolEvents(join(dir, 'not-a-dir', 'spool'), bootEvents(record())), false, 'an unwritable spool is reported, not thrown')
})

t.test('boot events reach the head now when it answers, and stay spooled when it does not', async (t) => {
  const received: string[] = []
  const srv = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => (body += d.toString()))
    req.on('end', () => {
      const ids = (JSON.parse(body) as { events: { id: string }[] }).events.map((e) => e.id)
      received.push(...ids)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ accepted: ids.length, duplicates: 0 }))
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())))
  const port = (srv.address() as { port: number }).port

  const dir = t.testdir()
  const spool = new Spool(dir)
  const ev = makeEvent('boot-failed', 'n9', { error: { code: 'EINTEGRITY' }, record: { result: 'failed' } })
  await spool.append(ev)
  t.equal(await deliverBootEvents(dir, `http://127.0.0.1:${port}`, 'n9'), 1)
  t.same(received, [ev.id], 'the head received the event')
  t.same(await spool.peek(10), [], 'and it left the spool')

  // A head that is down: nothing is lost, the daemon sends it later; the wait is bounded.
  const ev2 = makeEvent('fallback', 'n9', { kind: 'cache-missing' })
  await spool.append(ev2)
  const started = Date.now()
  t.equal(await deliverBootEvents(dir, 'http://127.0.0.1:9', 'n9', { deadlineMs: 500 }), 0)
  t.ok(Date.now() - started < 5_000, 'bounded by the deadline')
  t.same((await spool.peek(10)).map((s) => s.event.id), [ev2.id], 'still spooled')
})
