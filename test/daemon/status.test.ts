/**
 * `boot-agent status` on a node like a booted demo node: a boot record as the
 * boot stage writes it, a boot-stage spool on the cache partition holding the
 * `boot` event, and the daemon run with --once against a head node that is
 * down, then up. Also: events spooled in the initramfs get delivered.
 */
import t from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { silentLogger } from '../../agent/core/log.js'
import { command as statusCommand } from '../../agent/cli/status.js'
import { command as daemonCommand } from '../../agent/cli/daemon.js'
import { Spool } from '../../agent/events/spool.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { startTestHead } from '../helpers/real-head.js'

const SHA = 'ab'.repeat(32)

const run = async (cmd: typeof statusCommand, argv: string[]): Promise<{ code: number; out: string }> => {
  const lines: string[] = []
  const code = await cmd.run(argv, { log: silentLogger(), out: (l) => lines.push(l), signal: new AbortController().signal })
  return { code, out: lines.join('\n') }
}

t.test('status reads a booted node from local files, as text and as JSON, before and after delivery', gate('kmsg'), async (t) => {
  const root = t.testdir()
  // The real head node (agent/head/server.ts), stopped for the first run: a head that is down.
  const head = await startTestHead(['demo-1'])
  t.teardown(() => head.stop())
  await head.down()
  const cacheDir = join(root, 'cache')
  const spoolDir = join(cacheDir, 'spool')
  await mkdir(join(cacheDir, 'objects', 'sha256', 'ab'), { recursive: true })
  await writeFile(join(cacheDir, 'objects', 'sha256', 'ab', SHA.slice(2)), Buffer.alloc(4096))
  const record = {
    schema: 1, node: 'demo-1', server: head.url, style: 'disked', requestedStyle: 'disked',
    fallbacks: [{ kind: 'verify', reason: 'strong verification requested by the descriptor' }],
    image: { name: 'CPE-base', sha256: SHA, size: 4096 },
    cache: { spec: 'LABEL=_disk_cache', device: '/dev/vdb1', mountpoint: cacheDir, hit: true, objectPath: join(cacheDir, 'objects', 'sha256', 'ab', SHA.slice(2)) },
    root: { spec: 'LABEL=root', device: '/dev/vdb2' },
    bytesFetched: 0, timings: { fetch: 12 }, result: 'ok', spoolDir,
  }
  const recordPath = join(root, 'boot-record.json')
  await writeFile(recordPath, JSON.stringify(record))
  const bootEvent = makeEvent('boot', 'demo-1', { record: { ...record, result: 'ok' } }, { image: { name: 'CPE-base', sha256: SHA } })
  await new Spool(spoolDir).append(bootEvent)
  const stateDir = join(root, 'state')

  // Head down: the daemon spools, delivery fails, status says what waits.
  const first = await run(daemonCommand, ['--boot-record', recordPath, '--state-dir', stateDir, '--once', '--heartbeat-interval', '1'])
  t.equal(first.code, 1, 'daemon --once exits 1 when delivery failed')
  const text = await run(statusCommand, ['--boot-record', recordPath, '--state-dir', stateDir])
  t.equal(text.code, 0)
  t.comment(text.out)
  t.match(text.out, /node:\s+demo-1/)
  t.match(text.out, new RegExp(`image:\\s+CPE-base sha256:${SHA}`))
  t.match(text.out, /boot:\s+ok, style disked, cache hit/)
  t.match(text.out, /fallback:\s+verify: strong verification/)
  t.match(text.out, /kmsg:\s+seq \d+/)
  t.match(text.out, /heartbeat: \d{4}-/)
  t.match(text.out, new RegExp(`spool:\\s+1 event\\(s\\) waiting.*\\[${spoolDir}\\]`))
  t.match(text.out, /cache:\s+1 object\(s\), 4\.0 KiB/)
  const json = await run(statusCommand, ['--json', '--boot-record', recordPath, '--state-dir', stateDir])
  const s = JSON.parse(json.out) as { bootRecord: { node: string }; spools: { dir: string; events: number }[]; kmsg: { seq: number }; lastHeartbeat: unknown; caches: { objects: number }[] }
  t.equal(s.bootRecord.node, 'demo-1')
  t.equal(s.spools.find((x) => x.dir === spoolDir)?.events, 1, 'the boot-stage spool still holds the boot event')
  t.ok((s.spools.find((x) => x.dir === join(stateDir, 'spool'))?.events ?? 0) >= 1, 'the daemon spool holds at least the heartbeat')
  t.ok(Number.isSafeInteger(s.kmsg.seq))
  t.ok(s.lastHeartbeat)
  t.equal(s.caches[0]?.objects, 1)

  // Head up: everything goes, the boot-stage event included, once.
  await head.up()
  const second = await run(daemonCommand, ['--boot-record', recordPath, '--state-dir', stateDir, '--once', '--heartbeat-interval', '0'])
  t.equal(second.code, 0)
  const after = JSON.parse((await run(statusCommand, ['--json', '--boot-record', recordPath, '--state-dir', stateDir])).out) as typeof s
  t.same(after.spools.map((x) => x.events), [0, 0], 'both spools drained')
  t.equal(head.events().filter((e) => e.id === bootEvent.id).length, 1, 'the initramfs boot event was delivered')
  t.ok(head.events().some((e) => e.kind === 'status' && e.image?.sha256 === SHA), 'and the heartbeat, with the running digest')
  const hb = head.events().find((e) => e.kind === 'status')
  t.match(hb?.data, { arch: String, cpus: Object, memory: Object, style: 'disked', fallbacks: [{ kind: 'verify' }], running: { name: 'CPE-base', sha256: SHA } })
  t.equal(head.received().length, head.events().length, 'nothing twice')
})

t.test('status without any state says so instead of failing', async (t) => {
  const root = t.testdir()
  const r = await run(statusCommand, ['--boot-record', join(root, 'none.json'), '--state-dir', join(root, 'state')])
  t.equal(r.code, 0)
  t.match(r.out, /no boot record/)
  t.match(r.out, /kmsg:\s+not read yet/)
  t.match(r.out, /heartbeat: none yet/)
})

t.test('--help answers for daemon and status', async (t) => {
  t.match(daemonCommand.usage, /--server URL/)
  t.match(statusCommand.usage, /--json/)
})
