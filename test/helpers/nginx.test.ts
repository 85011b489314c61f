import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { canConnect, startNginx } from './nginx.js'
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
  // nginx writes the line as the request completes, maybe after the client has the body: access() waits for it.
  const log = await ng.access()
  t.match(log, [{ method: 'GET', path: '/f.bin', status: 206, bytes: 10, range: 'bytes=10-19' }])
  t.equal(log.length, 1, 'the requests access() sends to know the log complete are left out')
  await ng.clearAccess()
  t.same(await ng.access(), [], 'and clearAccess forgets what was logged')
})

t.test('an nginx dies with the test process that started it, even one killed before its teardown', gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  const script = join(dir, 'holder.ts')
  await writeFile(
    script,
    `import { startNginx } from ${JSON.stringify(new URL('./nginx.ts', import.meta.url).pathname)}\n` +
      `const ng = await startNginx(${JSON.stringify(join(dir, 'www'))})\n` +
      `process.stdout.write(String(ng.port) + '\\n')\n` +
      `setInterval(() => {}, 1000)\n`,
  )
  // The same loaders as this test (TypeScript), as tap starts a test file.
  const child = spawn(process.execPath, [...process.execArgv, script], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.setEncoding('utf8').once('data', (d: string) => resolve(Number(d.trim())))
    child.once('exit', (code) => reject(new Error(`holder exited ${code}`)))
  })
  t.ok(await canConnect(port), 'nginx serves while its test process lives')
  child.kill('SIGKILL') // what tap does at a timeout: no teardown runs
  let alive = true
  for (let i = 0; i < 50 && alive; i++) {
    await new Promise((r) => setTimeout(r, 100))
    alive = await canConnect(port)
  }
  t.notOk(alive, 'nothing listens on its port once the test process is gone')
})
