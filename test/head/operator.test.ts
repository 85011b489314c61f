/**
 * What an operator running the head sees (issue #21): one log line per boot
 * and per failed boot, a warning for each image the nodes file names that
 * the store has not published (at start and at reload), GET /v1/nodes, and
 * `boot-agent head` refusing a store that is not there unless --init.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { startHead } from '../../agent/head/server.js'
import type { Logger } from '../../agent/core/log.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { call, imageBytes, postEvents, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'
import { BUNDLE, runCli } from '../helpers/run-cli.js'
import { waitUntil } from '../helpers/wait.js'

/** A real pino logger at info whose lines are kept as parsed objects. */
const captured = (): { log: Logger; lines: Array<{ level: number; msg: string } & Record<string, unknown>> } => {
  const lines: Array<{ level: number; msg: string } & Record<string, unknown>> = []
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) }) as unknown as Logger
  return { log, lines }
}

t.test('the head logs one line per boot (info) and per failed boot (warn), naming node, image and why', async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const img = imageBytes(50_000, 4)
  await publishBytes(store, 'CPE-base', img, { dir })
  const { log, lines } = captured()
  const head = await startHead({ store, nodes: { schema: 1, defaults: { image: { name: 'CPE-base' } }, architectures: {}, groups: {}, nodes: { n1: {}, n2: {} }, images: {} }, log })
  t.teardown(() => head.close())
  const image = { name: 'CPE-base', sha256: sha256(img) }
  t.equal((await postEvents(head.url, 'n1', [makeEvent('boot', 'n1', { record: { result: 'ok', style: 'disked', fallbacks: [], cache: { hit: true } } }, { image })])).status, 200)
  const failed = makeEvent('boot-failed', 'n2', { record: { result: 'failed', style: 'rwram', fallbacks: [{ kind: 'no-cache', reason: 'LABEL=cwcache not found' }] }, error: { code: 'EINTEGRITY', message: 'sha256 mismatch for chunk 3' } }, { image })
  t.equal((await postEvents(head.url, 'n2', [failed])).status, 200)
  const boots = lines.filter((l) => typeof l.node === 'string' && /boot/.test(l.msg))
  t.match(boots, [
    { level: 30, node: 'n1', msg: `node n1 booted (CPE-base@${sha256(img).slice(0, 12)}, disked, cache hit)` },
    { level: 40, node: 'n2', msg: `node n2 boot FAILED (CPE-base@${sha256(img).slice(0, 12)}, rwram, fallbacks: no-cache): sha256 mismatch for chunk 3` },
  ])
  t.equal(boots.length, 2, 'one line each')

  const all = (await call(`${head.url}/v1/nodes`)).json as { nodes: Array<Record<string, unknown>> }
  t.match(all.nodes, [
    { node: 'n1', configured: true, image: 'CPE-base', running: sha256(img), lastBoot: { result: 'ok', style: 'disked', cacheHit: true }, fallbacks: [], errors: { integrity: 0 } },
    { node: 'n2', configured: true, running: null, lastBoot: { result: 'failed', style: 'rwram', error: 'sha256 mismatch for chunk 3' }, fallbacks: ['no-cache: LABEL=cwcache not found'], errors: { integrity: 1 } },
  ])
})

t.test('a nodes file naming an unpublished image loads with a warning naming where, at start and at reload', async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  await publishBytes(store, 'CPE-base', imageBytes(20_000, 2), { dir })
  const nodes = await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'CPE-base' }, groups: { gpu: { image: 'CPE-gpu' } }, nodes: { n1: {}, n2: { group: 'gpu' } } })
  const { log, lines } = captured()
  const head = await startHead({ store, nodes, log })
  t.teardown(() => head.close())
  const warned = () => lines.filter((l) => l.level === 40 && /not published/.test(l.msg)).map((l) => [l.where, l.image])
  t.same(warned(), [['groups.gpu', 'CPE-gpu']], 'the group and the image, at start')
  await writeNodes(nodes, { schema: 1, defaults: { image: 'CPE-base' }, nodes: { n1: {}, n3: { image: 'CPE-tpyo' } } })
  t.equal(await head.reload(), true)
  t.same(warned().slice(1), [['nodes.n3', 'CPE-tpyo']], 'the node and the image, at reload')
})

t.test('boot-agent head refuses a store that is not there (a mistyped --store), and creates it with --init', async (t) => {
  const dir = t.testdir()
  const nodes = await writeNodes(join(dir, 'nodes.json'), { schema: 1, nodes: {} })
  const r = runCli(['head', '--store', join(dir, 'stroe'), '--nodes', nodes, '--listen', '127.0.0.1:0'])
  t.equal(r.status, 2)
  t.match(r.stderr, `--store: no store at ${join(dir, 'stroe')} (no such directory): check the path`)
  t.notOk(existsSync(join(dir, 'stroe')), 'nothing created')

  const child = spawn(process.execPath, [BUNDLE, 'head', '--init', '--store', join(dir, 'new'), '--nodes', nodes, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  await waitUntil('the head to listen', async () => out.includes('"url"'), { timeoutMs: 15_000, everyMs: 50 })
  t.ok(existsSync(join(dir, 'new', 'objects')), '--init made the store')
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await exited
})

// `--store /srv` for `/srv/boot-agent`: an existing directory that is not a store was
// served empty and littered with objects/ manifests/ names/ tmp/ events/.
t.test('boot-agent head refuses an existing directory that holds other things but no store, and leaves it as it was', async (t) => {
  const dir = t.testdir()
  const nodes = await writeNodes(join(dir, 'nodes.json'), { schema: 1, nodes: {} })
  const wrong = join(dir, 'srv')
  await mkdir(join(wrong, 'boot-agent'), { recursive: true })
  await writeFile(join(wrong, 'www.conf'), 'x')
  const r = runCli(['head', '--store', wrong, '--nodes', nodes, '--listen', '127.0.0.1:0'])
  t.equal(r.status, 2)
  t.match(r.stderr, `--store: ${wrong} is not a boot-agent store`)
  t.same((await readdir(wrong)).sort(), ['boot-agent', 'www.conf'], 'nothing created in it')
})
