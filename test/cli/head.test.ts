/**
 * `boot-agent publish` and `boot-agent head` as an operator runs them: the
 * bundled single-file CLI in its own process, signals included (SIGHUP
 * reloads the nodes file, SIGTERM stops gracefully).
 */
import t from 'tap'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { bundleAgent as bundle } from '../helpers/bundle.js'
import { imageBytes, sha256 } from '../helpers/head-fixtures.js'
import { waitUntil } from '../helpers/wait.js'

const waitForLine = (child: ChildProcess, timeoutMs: number): Promise<string> =>
  new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`no output within ${timeoutMs} ms`)), timeoutMs)
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      const nl = buf.indexOf('\n')
      if (nl >= 0) {
        clearTimeout(timer)
        resolve(buf.slice(0, nl))
      }
    })
    child.once('exit', (code) => reject(new Error(`exited ${code} before printing`)))
  })

const until = (what: string, fn: () => Promise<boolean>): Promise<true> => waitUntil(what, fn, { timeoutMs: 5_000, everyMs: 50 })

t.test('publish then head: serves the node, reloads on SIGHUP (keeping a good config over a bad one), stops on SIGTERM', async (t) => {
  const dir = t.testdir()
  const cli = await bundle(dir)
  const img = join(dir, 'img.sqfs')
  const bytes = imageBytes(120_000, 9)
  await writeFile(img, bytes)
  const pub = JSON.parse(execFileSync('node', [cli, 'publish', img, '--name', 'CPE-base', '--store', join(dir, 'store'), '--arch', 'x86_64'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as { sha256: string }
  t.equal(pub.sha256, sha256(bytes))

  const nodes = join(dir, 'nodes.json')
  await writeFile(nodes, JSON.stringify({ schema: 1, defaults: { image: 'CPE-base' }, nodes: { n1: {} } }))
  let stderr = ''
  const child = spawn('node', [cli, 'head', '--store', join(dir, 'store'), '--nodes', nodes, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const { url } = JSON.parse(await waitForLine(child, 15_000)) as { url: string }
  t.equal((await fetch(`${url}/v1/nodes/n1/boot`)).status, 200)

  await writeFile(nodes, '{"schema": 1, "nodes": ')
  child.kill('SIGHUP')
  await until('the refused reload to be logged', async () => stderr.includes('nodes file not reloaded'))
  t.equal((await fetch(`${url}/v1/nodes/n1/boot`)).status, 200, 'the old config is still served')

  await writeFile(nodes, JSON.stringify({ schema: 1, defaults: { image: 'CPE-base' }, nodes: { n2: {} } }))
  child.kill('SIGHUP')
  await until('the new config to be served', async () => (await fetch(`${url}/v1/nodes/n2/boot`)).status === 200)
  t.equal((await fetch(`${url}/v1/nodes/n1/boot`)).status, 404)

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'a graceful stop exits 0')
  t.match(stderr, /head node stopped/)
})

t.test('--help answers for both commands', async (t) => {
  const dir = t.testdir()
  const cli = await bundle(dir)
  t.match(execFileSync('node', [cli, 'head', '--help'], { encoding: 'utf8' }), /--nodes FILE/)
  t.match(execFileSync('node', [cli, 'publish', '--help'], { encoding: 'utf8' }), /--sign KEY/)
})
