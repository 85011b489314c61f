/**
 * A fleet boot storm (issue 20): N simulated nodes start at once against one
 * head (`boot-agent head`, the bundled CLI in its own process) and R real
 * nginx rack caches on loopback (contrib/nginx/rack-cache.conf as shipped),
 * the nodes spread over several node processes each running many nodes
 * concurrently. A node is the real code: fetchDescriptor → fetchManifest
 * (gzip, parsed, pinned) → fetchImage (ranged download through its group's
 * mirrors, every chunk and the whole sha256 verified, written to its own
 * cache) → its boot event spooled and sent by the real Sender. A hit's cache
 * holds the image already (hard links of one verified object) and is
 * re-verified; a miss downloads it.
 *
 * Prints head image egress (its own counters), each cache's upstream bytes,
 * p50/p99 time to a verified image, failures, requests shed with Retry-After,
 * the head's peak RSS (VmHWM) and CPU time, and whether every node's boot
 * event is stored exactly once (read back from the head's event store).
 *
 * One machine's disk holds every miss's bytes: each node process runs at most
 * `--inflight` downloads at once (the rest of its nodes wait their turn, which
 * counts in their time) and deletes a node's image once it is verified.
 *
 * usage: npm run bench -- storm [--nodes 1000] [--caches 8] [--image-mib 32]
 *          [--miss-percent 100] [--procs 4] [--inflight 24] [--streams 1]
 *          [--node-dir /dev/shm]   (where the nodes' caches go: RAM, as an rwram node's)
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { copyFile, link, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { agentEnv, median, makeRandomFile, withTempDir, timeCommand } from './lib.js'

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    caches: { type: 'string', default: '8' },
    'image-mib': { type: 'string', default: '32' },
    'miss-percent': { type: 'string', default: '100' },
    procs: { type: 'string', default: '4' },
    inflight: { type: 'string', default: '24' },
    streams: { type: 'string', default: '1' },
    'node-dir': { type: 'string' },
    'head-max-image-streams': { type: 'string' },
    worker: { type: 'string' },
  },
  allowPositionals: true,
})

const CLI = 'dist/boot-agent.mjs'
const TS_IMPORT = '@isaacs/ts-node-temp-fork-for-pr-2009/import'

/** What a node process is told to do. */
interface WorkerSpec {
  server: string
  nodes: Array<{ id: string; miss: boolean }>
  dir: string
  inflight: number
  /** A cache holding the verified image: a hit node's cache links to its files. */
  template: string
  sha256: string
}

/** One node's outcome, a JSON line on the worker's stdout. */
interface NodeResult {
  id: string
  ok: boolean
  miss: boolean
  /** From the common start to a verified image. */
  ms: number
  /** Waits between attempts (shed or failed requests). */
  waits: number
  /** Why attempts failed, by error code (HTTP status for answers), counted. */
  causes?: Record<string, number>
  error?: string
}

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN
}

// ---- a node process ------------------------------------------------------

const runWorker = async (specPath: string): Promise<void> => {
  const spec = JSON.parse(await readFile(specPath, 'utf8')) as WorkerSpec
  const [{ fetchDescriptor }, { fetchImage, fetchManifest }, { seededRandom }, { Cache }, { Spool }, { Sender }, { makeEvent }, { sleep }, { DEFAULT_RETRY_POLICY }] = await Promise.all([
    import('../agent/boot/descriptor.js'),
    import('../agent/transport/fetch-image.js'),
    import('../agent/transport/mirrors.js'),
    import('../agent/cache/store.js'),
    import('../agent/events/spool.js'),
    import('../agent/events/sender.js'),
    import('../agent/protocol/event.js'),
    import('../agent/core/clock.js'),
    import('../agent/core/retry.js'),
  ])
  // A storm sheds: more attempts than a quiet boot needs, each honouring Retry-After.
  const retry = { ...DEFAULT_RETRY_POLICY, maxAttempts: 30 }
  const { metaPath, objectPath } = await import('../agent/cache/layout.js')
  process.stdout.write('ready\n')
  await new Promise<void>((resolve) => createInterface({ input: process.stdin }).once('line', () => resolve()))
  const t0 = performance.now()
  let slots = spec.inflight
  const waiting: Array<() => void> = []
  const acquire = async (): Promise<void> => {
    if (slots > 0) return void slots--
    await new Promise<void>((r) => waiting.push(r))
  }
  const release = (): void => {
    const next = waiting.shift()
    if (next) next()
    else slots++
  }
  const { default: pino } = await import('pino')
  const one = async (node: { id: string; miss: boolean }): Promise<NodeResult> => {
    let waits = 0
    const causes: Record<string, number> = {}
    // The real code logs each retry with its error: counted by code (EHTTP 503 = shed, EIDLE = a timeout).
    const log = pino({ level: 'warn' }, {
      write: (line: string) => {
        const o = JSON.parse(line) as { err?: { code?: string; status?: number } | string }
        const err = o.err
        const key = typeof err === 'object' ? `${err.code ?? 'E?'}${err.status ? ` ${err.status}` : ''}` : typeof err === 'string' ? err.slice(0, 40) : 'other'
        causes[key] = (causes[key] ?? 0) + 1
      },
    })
    const counted = (ms: number, signal?: AbortSignal) => {
      waits++
      return sleep(ms, signal)
    }
    const dir = join(spec.dir, node.id)
    try {
      const cacheDir = join(dir, 'cache')
      const cache = await Cache.open(cacheDir)
      if (!node.miss) {
        // A hit: the verified object and its metadata, as an earlier boot left them.
        await mkdir(join(objectPath(cacheDir, spec.sha256), '..'), { recursive: true })
        await link(objectPath(spec.template, spec.sha256), objectPath(cacheDir, spec.sha256))
        await copyFile(metaPath(spec.template, spec.sha256), metaPath(cacheDir, spec.sha256))
      }
      const d = await fetchDescriptor(spec.server, node.id, { timeoutMs: 60_000, attempts: 30, log, random: seededRandom(`${node.id}:descriptor`), sleep: counted })
      const manifest = await fetchManifest(d.image.manifest, { pinned: { sha256: d.image.sha256, size: d.image.size, by: 'the descriptor' }, random: seededRandom(`${node.id}:manifest`), retry, sleep: counted, log })
      if (node.miss) await acquire()
      let r
      try {
        r = await fetchImage({ manifest, cache, log, nodeId: node.id, retry, sleep: counted, ...(d.image.mirrors ? { mirrors: d.image.mirrors } : {}), streams: d.policies.streams ?? 1 })
      } finally {
        if (node.miss) release()
      }
      if (r.hit === node.miss) throw new Error(`expected a ${node.miss ? 'miss' : 'hit'}, got a ${r.hit ? 'hit' : 'miss'}`)
      const ms = performance.now() - t0
      await rm(r.path, { force: true }) // one machine's disk: the verified bytes are not kept
      const spool = new Spool(join(dir, 'spool'))
      await spool.append(makeEvent('boot', node.id, { record: { result: 'ok', cache: { hit: r.hit }, bytesFetched: r.bytesDownloaded } }, { image: { name: manifest.name, sha256: manifest.sha256 } }))
      // Sent until acknowledged (at-least-once); the head stores it once.
      const sender = new Sender({ server: spec.server, node: node.id, spools: [spool], random: seededRandom(`${node.id}:events`) })
      for (let attempt = 0; ; attempt++) {
        const f = await sender.flushOnce().catch((e: unknown) => e)
        if (!(f instanceof Error)) break
        if (attempt >= 30) throw f
        const code = `${(f as { code?: string }).code ?? ((f as Error).name === 'AbortError' ? 'timeout' : (f as Error).message.slice(0, 60))}${(f as { status?: number }).status ? ` ${(f as { status?: number }).status}` : ''} (events)`
        causes[code] = (causes[code] ?? 0) + 1
        await counted(1000 + Math.floor(seededRandom(`${node.id}:${attempt}`)() * 4000))
      }
      return { id: node.id, ok: true, miss: node.miss, ms, waits, causes }
    } catch (e) {
      return { id: node.id, ok: false, miss: node.miss, ms: performance.now() - t0, waits, causes, error: e instanceof Error ? `${(e as { code?: string }).code ?? ''} ${e.message}`.slice(0, 300) : String(e) }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
  await Promise.all(spec.nodes.map(async (n) => process.stdout.write(JSON.stringify(await one(n)) + '\n')))
  // Keep-alive connections, hashing threads and stdin would keep the process alive: its work is done.
  process.stdout.write('', () => process.exit(0))
}

// ---- the storm -------------------------------------------------------------

/** Peak RSS (VmHWM) and CPU seconds (user + system) of process `pid`, from /proc. */
const procUsage = async (pid: number): Promise<{ peakRssBytes: number; cpuSeconds: number }> => {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? []
  return { peakRssBytes: hwm, cpuSeconds: (Number(stat[11]) + Number(stat[12])) / 100 }
}

const runStorm = async (): Promise<void> => {
  const N = Number(values.nodes)
  const R = Number(values.caches)
  const IMAGE_BYTES = Number(values['image-mib']) * 1024 * 1024
  const MISSES = Math.round((N * Number(values['miss-percent'])) / 100)
  const PROCS = Number(values.procs)
  const STREAMS = Number(values.streams)
  const { freePort } = await import('../test/helpers/nginx.js')
  const { startRackCache } = await import('../test/helpers/rack-cache.js')
  const { EventLog } = await import('../agent/head/event-log.js')
  const { ImageStore } = await import('../agent/head/store.js')
  const { Cache } = await import('../agent/cache/store.js')
  const { parseManifest } = await import('../agent/manifest/index.js')
  const { xxh64Segments } = await import('../agent/hash/segments.js')

  await withTempDir('ba-storm-', async (dir) => {
    const image = join(dir, 'os.sqfs')
    await makeRandomFile(image, IMAGE_BYTES)
    const store = join(dir, 'store')
    await timeCommand(process.execPath, [CLI, 'publish', image, '--name', 'os', '--store', store, '--arch', 'x86_64'], { env: agentEnv() })
    const headPort = await freePort()
    const server = `http://127.0.0.1:${headPort}`
    const cleanups: Array<() => Promise<unknown>> = []
    const caches = await Promise.all(Array.from({ length: R }, () => startRackCache(server, { maxSize: `${Math.ceil((IMAGE_BYTES * 2) / 1048576)}m`, upstreamLog: true })))
    try {
      const ids = Array.from({ length: N }, (_, i) => `n${String(i).padStart(5, '0')}`)
      const rackOf = (i: number): number => i % Math.max(1, R)
      const nodesFile = join(dir, 'nodes.json')
      await writeFile(
        nodesFile,
        JSON.stringify({
          schema: 1,
          defaults: { image: 'os', style: 'disked', policies: { streams: STREAMS } },
          groups: Object.fromEntries(caches.map((c, r) => [`rack${r}`, { mirrors: [c.url, server] }])),
          nodes: Object.fromEntries(ids.map((n, i) => [n, R ? { group: `rack${rackOf(i)}` } : {}])),
        }),
      )
      const capArgs = values['head-max-image-streams'] ? ['--max-image-streams', values['head-max-image-streams']] : []
      const head = spawn(process.execPath, [CLI, 'head', '--store', store, '--nodes', nodesFile, '--listen', `127.0.0.1:${headPort}`, ...capArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: agentEnv({ BOOT_AGENT_LOG_LEVEL: 'info' }) })
      let headErr = ''
      head.stderr.setEncoding('utf8').on('data', (d: string) => (headErr = (headErr + d).slice(-200_000)))
      const headExited = new Promise<void>((resolve) => head.once('exit', () => resolve()))
      await new Promise<void>((resolve, reject) => {
        head.stdout.setEncoding('utf8').once('data', () => resolve())
        head.once('exit', () => reject(new Error(`head exited: ${headErr.slice(-2000)}`)))
      })

      // The hits' verified object, once, through the real cache's publish.
      const sha = (await new ImageStore(store).current('os'))!.sha256
      const manifest = parseManifest(JSON.parse(await readFile(new ImageStore(store).manifestPath(sha), 'utf8')), { baseUrl: server })
      // Beside the nodes' caches (hard links do not cross file systems).
      const template = join(values['node-dir'] ?? dir, `ba-storm-template-${process.pid}`)
      cleanups.push(() => rm(template, { recursive: true, force: true }))
      const tc = await Cache.open(template)
      const from = join(tc.tmpDir, 'img')
      await copyFile(image, from)
      await tc.publish({ from, sha256: sha, computedSha256: sha, size: IMAGE_BYTES, xxh64: (await xxh64Segments(from)).xxh64, chunks: manifest.chunks, name: 'os' })

      // Misses spread through the node list; nodes dealt round-robin to the processes.
      const isMiss = (i: number): boolean => Math.floor((i * MISSES) / N) !== Math.floor(((i + 1) * MISSES) / N)
      const workers: ChildProcess[] = []
      const results: NodeResult[] = []
      const ready: Promise<void>[] = []
      const done: Promise<void>[] = []
      for (let p = 0; p < PROCS; p++) {
        const spec: WorkerSpec = {
          server,
          nodes: ids.flatMap((id, i) => (i % PROCS === p ? [{ id, miss: isMiss(i) }] : [])),
          dir: join(values['node-dir'] ?? dir, `ba-storm-nodes-${process.pid}-${p}`),
          inflight: Number(values.inflight),
          template,
          sha256: sha,
        }
        const specPath = join(dir, `worker-${p}.json`)
        await writeFile(specPath, JSON.stringify(spec))
        const w = spawn(process.execPath, [`--import=${TS_IMPORT}`, 'bench/storm.ts', '--worker', specPath], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...agentEnv(), TS_NODE_TRANSPILE_ONLY: '1' } })
        workers.push(w)
        const lines = createInterface({ input: w.stdout! })
        ready.push(new Promise((resolve) => lines.once('line', () => resolve())))
        done.push(
          new Promise((resolve) => {
            lines.on('line', (l) => {
              if (l.startsWith('{')) results.push(JSON.parse(l) as NodeResult)
            })
            w.once('exit', () => resolve())
          }),
        )
      }
      await Promise.all(ready)
      const started = performance.now()
      for (const w of workers) w.stdin!.write('go\n')
      await Promise.all(done)
      const wallMs = performance.now() - started
      const usage = await procUsage(head.pid!)
      head.kill('SIGTERM')
      await headExited
      const stop = headErr.split('\n').map((l) => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find((l) => l.msg === 'head node stopped')
      if (!stop) throw new Error('the head did not log its counters at shutdown')
      const upstream = await Promise.all(caches.map((c) => c.upstreamBytes()))

      // Every node's boot event, read back from the head's own store.
      const perNode = new Map<string, number>()
      await new EventLog(join(store, 'events')).open({ onReplay: (e) => e.kind === 'boot' && perNode.set(e.node, (perNode.get(e.node) ?? 0) + 1) })
      const okIds = results.filter((r) => r.ok).map((r) => r.id)
      const exactlyOnce = okIds.every((id) => perNode.get(id) === 1) && [...perNode.values()].every((n) => n === 1)

      const failed = results.filter((r) => !r.ok)
      const misses = results.filter((r) => r.miss).length
      const imageBytes = Number(stop.imageBytes)
      const t = results.filter((r) => r.ok).map((r) => r.ms)
      const tMiss = results.filter((r) => r.ok && r.miss).map((r) => r.ms)
      const admission = stop.admission as { shed?: number; peakImageStreams?: number; peakRequests?: number } | undefined
      const bound = R ? 1.05 * R * IMAGE_BYTES : misses * IMAGE_BYTES
      const MB = (b: number) => (b / 1e6).toFixed(1)
      const out = [
        `| nodes | rack caches | image | misses | failed | head image egress | bound | each cache's upstream (MB) | p50 | p99 | p99/p50 | shed (503 + Retry-After) | head peak RSS | head CPU | boot events stored once | wall |`,
        `|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|`,
        `| ${N} | ${R} | ${IMAGE_BYTES / 1048576} MiB | ${misses} | ${failed.length} | ${imageBytes} B (${MB(imageBytes)} MB) | ${R ? `≤ 1.05 × ${R} × size = ${MB(bound)} MB` : `= misses × size = ${bound} B`}: ${R ? (imageBytes <= bound ? 'met' : 'NOT met') : imageBytes === bound ? 'equal' : 'DIFFERENT'} | ${upstream.map(MB).join(', ') || '–'} | ${median(t).toFixed(0)} ms | ${percentile(t, 99).toFixed(0)} ms | ${(percentile(t, 99) / median(t)).toFixed(2)} | ${admission?.shed ?? 0} | ${MB(usage.peakRssBytes)} MB | ${usage.cpuSeconds.toFixed(1)} s | ${exactlyOnce ? `yes (${perNode.size})` : 'NO'} | ${(wallMs / 1000).toFixed(1)} s |`,
      ]
      process.stdout.write(out.join('\n') + '\n')
      process.stdout.write(`misses only: p50 ${median(tMiss).toFixed(0)} ms, p99 ${percentile(tMiss, 99).toFixed(0)} ms; head peak image streams ${admission?.peakImageStreams ?? '?'}, peak requests ${admission?.peakRequests ?? '?'}; node waits between attempts: ${results.reduce((n, r) => n + r.waits, 0)} (causes ${JSON.stringify(results.reduce<Record<string, number>>((acc, r) => { for (const [k, v] of Object.entries(r.causes ?? {})) acc[k] = (acc[k] ?? 0) + v; return acc }, {}))}); requests by route ${JSON.stringify(stop.byRoute)}; metadata bytes ${stop.metadataBytes}\n`)
      if (failed.length) {
        process.stdout.write(`FAILED ${failed.length}: ${[...new Set(failed.map((f) => f.error))].slice(0, 5).join(' | ')}\n`)
        process.exitCode = 1
      }
    } finally {
      await Promise.all(caches.map((c) => c.stop()))
      for (const c of cleanups) await c()
      for (let p = 0; p < PROCS; p++) await rm(join(values['node-dir'] ?? dir, `ba-storm-nodes-${process.pid}-${p}`), { recursive: true, force: true })
    }
  })
}

if (values.worker) await runWorker(values.worker)
else await runStorm()
