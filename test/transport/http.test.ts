/**
 * agent/transport/http.ts against a real nginx: what a body leaves behind
 * when its reader stops at the byte it wanted (the downloader does, then
 * cancels). A watchdog timer left running held every https download's
 * process for IDLE_TIMEOUT_MS (30 s) after its work was done.
 */
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openBody, pieceReader } from '../../agent/transport/http.js'
import { gate } from '../helpers/capability.js'
import { startNginx } from '../helpers/nginx.js'

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length

t.test('a body read to the wanted byte and cancelled leaves no timer running', gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  await writeFile(join(dir, 'www', 'blob'), Buffer.alloc(256 * 1024, 7))
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const before = timers()
  const b = await openBody(`${ng.url}/blob`, { start: 1024, end: 1024 + 100_000 }, { idleTimeoutMs: 60_000 })
  t.match(b, { status: 206, ranged: true, start: 1024, length: 100_000 })
  const read = pieceReader(b)
  const into = new Uint8Array(100_000)
  let got = 0
  // As the downloader does: read exactly what was asked for, never the end-of-body.
  while (got < into.length) got += await read(into.subarray(got))
  t.equal(got, 100_000)
  t.ok(timers() > before, 'the stall watchdog runs while the body is being read')
  b.cancel()
  t.equal(timers(), before, 'cancel() stops the watchdog: nothing holds the process')
})
