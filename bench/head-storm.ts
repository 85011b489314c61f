/**
 * Boot storm against the reference head node (issue 4): N simulated agents
 * start at once against `boot-agent head` (the bundled CLI, its own process)
 * on loopback. A fraction are cache misses and download the image; the rest
 * are hits and fetch only the descriptor and the manifest. Every agent then
 * posts its boot event. Reports: all succeeded?, head egress (bytes the
 * server wrote to its sockets, from its own counters, logged at shutdown)
 * against misses × image size + metadata, and p50/p99 completion.
 *
 * A simulated agent: GET descriptor → GET manifest (parsed and checked by the
 * real parseManifest) → on a miss GET the image streamed through sha256 and
 * compared with the manifest (no disk write: this measures the head, not the
 * node's disk) → POST /v1/nodes/N/events with a boot event.
 *
 * Baseline in the same run: the same storm against nginx serving the same
 * descriptor, manifest and image files statically (no events: nginx cannot
 * store them), so the fetch phase can be compared as a ratio.
 *
 * usage: npm run bench -- head-storm [--agents 200] [--miss-percent 10] [--image-mib 64]
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { makeEvent } from '../agent/protocol/event.js'
import { parseManifest } from '../agent/manifest/index.js'
import { copyFile, link, mkdir } from 'node:fs/promises'
import { agentEnv, median, makeRandomFile, withTempDir, timeCommand } from './lib.js'
import { startNginx } from '../test/helpers/nginx.js'
import { ImageStore } from '../agent/head/store.js'

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '200' },
    'miss-percent': { type: 'string', default: '10' },
    'image-mib': { type: 'string', default: '64' },
  },
  allowPositionals: true,
})
const AGENTS = Number(values.agents)
const MISSES = Math.round((AGENTS * Number(values['miss-percent'])) / 100)
const IMAGE_BYTES = Number(values['image-mib']) * 1024 * 1024
const CLI = 'dist/boot-agent.mjs'

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN
}

interface AgentResult {
  ok: boolean
  miss: boolean
  ms: number
  /** Time spent posting the boot event until its durable acknowledgement. */
  eventMs?: number
  /** Time until the image was known good (descriptor, manifest, bytes on a miss). */
  fetchMs?: number
  error?: string
}

const agent = async (base: string, node: string, miss: boolean, report = true): Promise<AgentResult> => {
  const started = performance.now()
  try {
    const d = (await (await fetch(`${base}/v1/nodes/${node}/boot?arch=x86_64`)).json()) as { style: string; image: { name: string; sha256: string; size: number; manifest: string } }
    const manifestUrl = new URL(d.image.manifest, base).href
    const m = parseManifest(await (await fetch(manifestUrl)).json(), { baseUrl: manifestUrl })
    if (m.sha256 !== d.image.sha256) throw new Error('manifest does not match the descriptor')
    if (miss) {
      const res = await fetch(m.urls[0] ?? '')
      if (!res.ok || !res.body) throw new Error(`image: HTTP ${res.status}`)
      const h = createHash('sha256')
      let n = 0
      for await (const chunk of res.body) {
        h.update(chunk)
        n += chunk.length
      }
      if (n !== m.size || h.digest('hex') !== m.sha256) throw new Error('image bytes do not match the manifest')
    }
    const eventStarted = performance.now()
    if (!report) return { ok: true, miss, ms: eventStarted - started, fetchMs: eventStarted - started }
    const ev = makeEvent('boot', node, { record: { result: 'ok', style: d.style, fallbacks: [], cache: { hit: !miss }, bytesFetched: miss ? m.size : 0 } }, { image: { name: m.name, sha256: m.sha256 } })
    const post = await fetch(`${base}/v1/nodes/${node}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: [ev] }) })
    const ack = (await post.json()) as { accepted?: number }
    if (post.status !== 200 || ack.accepted !== 1) throw new Error(`events: HTTP ${post.status}`)
    const now = performance.now()
    return { ok: true, miss, ms: now - started, eventMs: now - eventStarted, fetchMs: eventStarted - started }
  } catch (e) {
    return { ok: false, miss, ms: performance.now() - started, error: e instanceof Error ? e.message : String(e) }
  }
}

await withTempDir('ba-head-storm-', async (dir) => {
  const image = join(dir, 'CPE-base.sqfs')
  await makeRandomFile(image, IMAGE_BYTES)
  const store = join(dir, 'store')
  await timeCommand(process.execPath, [CLI, 'publish', image, '--name', 'CPE-base', '--store', store, '--arch', 'x86_64'], { env: agentEnv() })
  const nodeIds = Array.from({ length: AGENTS }, (_, i) => `nid${String(i).padStart(5, '0')}`)
  const nodesFile = join(dir, 'nodes.json')
  await writeFile(nodesFile, JSON.stringify({ schema: 1, defaults: { image: 'CPE-base', style: 'disked', partitions: { cache: 'LABEL=cwcache', root: 'LABEL=cwroot' } }, nodes: Object.fromEntries(nodeIds.map((n) => [n, {}])) }))

  const head = spawn(process.execPath, [CLI, 'head', '--store', store, '--nodes', nodesFile, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'], env: agentEnv({ BOOT_AGENT_LOG_LEVEL: 'info' }) })
  let stderr = ''
  head.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<void>((resolve) => head.once('exit', () => resolve()))
  const base = await new Promise<string>((resolve, reject) => {
    let out = ''
    head.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      const nl = out.indexOf('\n')
      if (nl >= 0) resolve((JSON.parse(out.slice(0, nl)) as { url: string }).url)
    })
    head.once('exit', () => reject(new Error(`head exited: ${stderr.slice(-2000)}`)))
  })
  // Misses spread through the storm (every k-th node), everyone starts at once.
  const step = MISSES ? Math.floor(AGENTS / MISSES) : Infinity
  const isMiss = (i: number): boolean => MISSES > 0 && i % step === 0 && i / step < MISSES

  // Baseline first: nginx serving the same bytes as static files at the same paths.
  const www = join(dir, 'www')
  const desc = (await (await fetch(`${base}/v1/nodes/${nodeIds[0]}/boot?arch=x86_64`)).json()) as { image: { sha256: string } }
  const sha = desc.image.sha256
  const imgDir = join(www, 'v1', 'images', 'by-digest', sha)
  await mkdir(imgDir, { recursive: true })
  const st = new ImageStore(store)
  await copyFile(st.manifestPath(sha), join(imgDir, 'manifest'))
  await link(st.objectPath(sha), join(imgDir, 'image'))
  for (const n of nodeIds) {
    await mkdir(join(www, 'v1', 'nodes', n), { recursive: true })
    await writeFile(join(www, 'v1', 'nodes', n, 'boot'), JSON.stringify({ ...desc, node: n }))
  }
  const ng = await startNginx(www)
  let baseline: AgentResult[]
  try {
    baseline = await Promise.all(nodeIds.map((n, i) => agent(ng.url, n, isMiss(i), false)))
  } finally {
    await ng.stop()
  }

  const started = performance.now()
  const results = await Promise.all(nodeIds.map((n, i) => agent(base, n, isMiss(i))))
  const wallMs = performance.now() - started
  head.kill('SIGTERM')
  await exited
  const stop = stderr.split('\n').map((l) => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find((l) => l.msg === 'head node stopped')
  if (!stop) throw new Error('the head did not log its counters at shutdown')
  const bytesWritten = Number(stop.bytesWritten)
  const imageBytes = Number(stop.imageBytes)
  const metadataBytes = Number(stop.metadataBytes)
  const failed = results.filter((r) => !r.ok)
  const misses = results.filter((r) => r.miss).length
  const times = results.map((r) => r.ms)
  const hitTimes = results.filter((r) => !r.miss).map((r) => r.ms)
  const missTimes = results.filter((r) => r.miss).map((r) => r.ms)
  const expected = misses * IMAGE_BYTES
  const lines = [
    `| agents | misses | image | succeeded | image bytes sent | misses × image size | metadata bodies | headers | total egress | p50 | p99 | p50 hit / miss | wall |`,
    `|---|---|---|---|---|---|---|---|---|---|---|---|---|`,
    `| ${AGENTS} | ${misses} | ${IMAGE_BYTES / 1048576} MiB | ${AGENTS - failed.length}/${AGENTS} | ${imageBytes} | ${expected} (${imageBytes === expected ? 'equal' : 'DIFFERENT'}) | ${metadataBytes} | ${bytesWritten - imageBytes - metadataBytes} | ${bytesWritten} (${(bytesWritten / expected).toFixed(4)}×) | ${median(times).toFixed(0)} ms | ${percentile(times, 99).toFixed(0)} ms | ${median(hitTimes).toFixed(0)} / ${median(missTimes).toFixed(0)} ms | ${wallMs.toFixed(0)} ms |`,
  ]
  process.stdout.write(lines.join('\n') + '\n')
  const eventTimes = results.flatMap((r) => (r.eventMs === undefined ? [] : [r.eventMs]))
  process.stdout.write(`requests by route: ${JSON.stringify(stop.byRoute)}\n`)
  process.stdout.write(`of which posting the boot event until acknowledged (fsync): p50 ${median(eventTimes).toFixed(0)} ms, p99 ${percentile(eventTimes, 99).toFixed(0)} ms\n`)
  const fetchHead = results.flatMap((r) => (r.fetchMs === undefined ? [] : [r.fetchMs]))
  const fetchNginx = baseline.flatMap((r) => (r.fetchMs === undefined ? [] : [r.fetchMs]))
  process.stdout.write(
    `fetch phase (descriptor + manifest + image on a miss), head vs nginx on the same files: ` +
      `p50 ${median(fetchHead).toFixed(0)} vs ${median(fetchNginx).toFixed(0)} ms (${(median(fetchHead) / median(fetchNginx)).toFixed(2)}×), ` +
      `p99 ${percentile(fetchHead, 99).toFixed(0)} vs ${percentile(fetchNginx, 99).toFixed(0)} ms (${(percentile(fetchHead, 99) / percentile(fetchNginx, 99)).toFixed(2)}×); ` +
      `nginx baseline ${baseline.filter((r) => r.ok).length}/${AGENTS} ok\n`,
  )
  if (failed.length) {
    process.stdout.write(`FAILED: ${failed.length}: ${[...new Set(failed.map((f) => f.error))].slice(0, 5).join('; ')}\n`)
    process.exitCode = 1
  }
})
