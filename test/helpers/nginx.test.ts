import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startNginx } from './nginx.js'
import { gate } from './capability.js'

t.test('the nginx fixture serves files, honours Range and logs bytes sent', gate('nginx'), async (t) => {
  const root = t.testdir()
  await writeFile(join(root, 'f.bin'), Buffer.alloc(1000, 7))
  const ng = await startNginx(root)
  t.teardown(() => ng.stop())
  await ng.clearAccess()
  const res = await fetch(`${ng.url}/f.bin`, { headers: { range: 'bytes=10-19' } })
  t.equal(res.status, 206)
  t.equal((await res.arrayBuffer()).byteLength, 10)
  // nginx writes the log line as the request completes; allow it a moment.
  await new Promise((r) => setTimeout(r, 100))
  const log = await ng.access()
  t.match(log, [{ method: 'GET', path: '/f.bin', status: 206, bytes: 10, range: 'bytes=10-19' }])
})
