import t from 'tap'
import os from 'node:os'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { parseBootRecord } from '../../agent/daemon/boot-record.js'
import { collectStatus } from '../../agent/daemon/heartbeat.js'
import { parseEvent } from '../../agent/protocol/parse.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { publishBytes } from '../helpers/cache.js'

const A = 'a'.repeat(64)

t.test('the status names this machine, its hardware and the image, style and fallbacks of its boot record', async (t) => {
  const dir = t.testdir()
  const cache = await Cache.open(dir)
  await publishBytes(cache, randomBytes(20_000))
  const bootRecord = parseBootRecord(JSON.stringify({ style: 'rwram', requestedStyle: 'disked', result: 'ok', image: { name: 'CPE-base', sha256: A }, fallbacks: [{ kind: 'no-root', reason: 'missing' }] }))
  const s = await collectStatus({ bootRecord, cacheDirs: [dir], daemon: { spooled: 3 } })
  t.equal(s.hostname, os.hostname())
  t.ok(typeof s.kernel === 'string' && s.kernel.length > 0)
  t.ok((s.cpus?.cores ?? 0) >= 1)
  t.ok((s.memory?.totalBytes ?? 0) > 0)
  t.ok(Array.isArray(s.disks) && s.disks.every((d) => (d.sizeBytes ?? 0) > 0), 'only file systems with a size')
  t.match(s.cache, [{ dir, objects: 1, bytes: 20_000 }])
  t.same(s.running, { name: 'CPE-base', sha256: A })
  t.match(s, { style: 'rwram', requestedStyle: 'disked', bootResult: 'ok', fallbacks: [{ kind: 'no-root', reason: 'missing' }], daemon: { spooled: 3 } })
  // A probe past its 5 s deadline is left out and named, never fatal (a loaded machine may be that slow).
  for (const e of s.probeErrors ?? []) t.match(e, /^(cpu|mem|fsSize|osInfo|cache \S+): /)
})

t.test('without a boot record the status says nothing runs from boot-agent', async (t) => {
  const s = await collectStatus({ cacheDirs: [], daemon: {} })
  t.match(s, { running: null, style: null, requestedStyle: null, bootResult: null, fallbacks: [], cache: [] })
})

t.test('the status is a payload the protocol accepts as a status event', async (t) => {
  const s = await collectStatus({ cacheDirs: [join(t.testdir(), 'none')], daemon: { kmsgSeq: 5 } })
  const r = parseEvent(JSON.parse(JSON.stringify(makeEvent('status', 'n1', s))))
  t.ok(r.ok, r.ok ? 'accepted' : JSON.stringify(r))
})
