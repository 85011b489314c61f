/**
 * The kill campaign (issue #22, docs/reliability.md): the real agent (its
 * bundle, a child process) SIGKILLed at seeded passes of every named kill
 * point (agent/core/fault.ts) across five scenarios — a fresh download, a
 * repair of a damaged cached object, a head-node publish, the head's event
 * append under a node's real spool and sender, and a disked root's unpack —
 * each kill followed by a check of what it left and a restart. What must
 * hold after every kill and every restart:
 *
 * - no unverified byte used: every chunk a partial download records as
 *   verified has its manifest sha256 on disk; the restart ends with the
 *   object whose sha256 is its name;
 * - no corrupt object published: every object file in the cache and in the
 *   head's store hashes to its name; a name the head serves points at a
 *   stored, verifiable image and a manifest that parses;
 * - no acknowledged event lost or duplicated: every event the head
 *   acknowledged (the sender took it out of the spool) is in the head's log,
 *   and once the spool is drained after restart every event is there exactly once;
 * - a root with the boot marker is complete, and the restart's root is
 *   exactly the image's tree.
 *
 * How kills are chosen: each scenario runs once with BOOT_AGENT_FAULT_TRACE to
 * count the passes of each point; then, from the seed, up to QUOTA pass
 * numbers per (scenario, point) are drawn. Every point must be passed by
 * some scenario, and at least MIN_KILLS kills must have landed.
 * Reproduce one: the test prints `scenario point:n`; run the scenario with
 * BOOT_AGENT_FAULT=point:n. Seed: KILL_SEED (env overrides).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, cp, mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { build } from 'esbuild'
import { FAULT_POINTS } from '../../agent/core/fault.js'
import { buildManifest, serializeManifest } from '../../agent/manifest/index.js'
import { parseManifest } from '../../agent/manifest/schema.js'
import type { Manifest } from '../../agent/manifest/types.js'
import { seededRandom } from '../../agent/transport/mirrors.js'
import { makeEvent, type AgentEvent } from '../../agent/protocol/event.js'
import { Spool } from '../../agent/events/spool.js'
import { Sender } from '../../agent/events/sender.js'
import { bundleAgent } from '../helpers/bundle.js'
import { gate } from '../helpers/capability.js'
import { filesUnder, OBJECT_NAME, sha256 } from './files.js'
import { writeImage } from '../helpers/image.js'
import { freePort, startNginx } from '../helpers/nginx.js'
import { writeNodes } from '../helpers/head-fixtures.js'

const KILL_SEED = process.env.KILL_SEED ?? 'kill-points-v1'
/** Kills drawn per (scenario, point) at most. */
const QUOTA = Number(process.env.KILL_QUOTA ?? 6)
/** Scenarios run side by side (each its own directories), kills within one in turn. */
const PARALLEL = 3
const MIN_KILLS = 100
/** Four of the download's 4 MiB write buffers: four chunk-written passes. */
const IMAGE_BYTES = 16 * 1024 * 1024
const CHILD_TIMEOUT_MS = 60_000

const fileSha = async (p: string): Promise<string> => sha256(await readFile(p))

interface Ran { code: number | null; signal: string | null; out: string; err: string }

/** Runs `argv` under node with `env` added; bounded; resolves with how it ended. */
const runNode = (argv: string[], env: Record<string, string> = {}): { done: Promise<Ran>; kill: () => void } => {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '', BOOT_AGENT_LOG_LEVEL: 'error', ...env } })
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS)
  const done = new Promise<Ran>((resolve) => child.on('exit', (code, signal) => {
    clearTimeout(timer)
    resolve({ code, signal, out, err })
  }))
  return { done, kill: () => child.kill('SIGKILL') }
}


/** One scenario: how to set it up fresh, run it, judge what a kill left, and judge the restart. */
interface Scenario {
  name: string
  /** Fresh state before each kill. */
  reset(): Promise<void>
  /** The run that is killed (env carries the fault). */
  run(env: Record<string, string>): Promise<Ran>
  /** What a kill left: returns problems (empty: fine). */
  afterKill(): Promise<string[]>
  /** The restart, unarmed: returns problems. */
  restart(): Promise<string[]>
}

// ---- the cache: objects are their names; a recorded verified chunk is on disk ----

/** `damaged`: bytes the scenario itself left at the object's path before the run (the repair's input), allowed until repaired. */
const cacheProblems = async (cache: string, m: Manifest, damaged?: string): Promise<string[]> => {
  const problems: string[] = []
  const objects = join(cache, 'objects', 'sha256')
  // Only object names: a durable write's temp file (`.name.pid.rand.tmp`) left by a kill is ignored by the cache (walk.ts).
  for (const f of (await filesUnder(objects)).filter((f) => OBJECT_NAME.test(f))) {
    const name = f.replace('/', '')
    const got = await fileSha(join(objects, f))
    if (got !== name && got !== damaged) problems.push(`cache object ${f} holds bytes of sha256 ${got}: neither the image nor the damaged copy the run started from (half-written)`)
  }
  const state = join(cache, 'tmp', `${m.sha256}.state.json`)
  if (existsSync(state)) {
    const verified = (JSON.parse(await readFile(state, 'utf8')) as { verified: number[] }).verified
    const fh = await open(join(cache, 'tmp', `${m.sha256}.part`), 'r').catch(() => undefined)
    if (!fh && verified.length) problems.push(`state records ${verified.length} verified chunks but there is no .part file`)
    if (fh) {
      try {
        for (const i of verified) {
          const c = m.chunks[i]!
          const buf = Buffer.alloc(c.size)
          const { bytesRead } = await fh.read(buf, 0, c.size, c.offset)
          if (bytesRead !== c.size || sha256(buf) !== c.sha256) problems.push(`chunk ${i} is recorded verified but its bytes on disk are not`)
        }
      } finally {
        await fh.close()
      }
    }
  }
  return problems
}

const fetchScenario = (name: string, agent: string, cache: string, url: string, m: Manifest, prepare: () => Promise<void>, damaged?: string): Scenario => {
  const args = [agent, 'fetch', url, '--cache', cache, '--json', '--streams', '4']
  return {
    name,
    reset: prepare,
    run: (env) => runNode(args, env).done,
    afterKill: () => cacheProblems(cache, m, damaged),
    async restart() {
      const r = await runNode(args).done
      if (r.code !== 0) return [`restart exited ${r.code}: ${r.err.slice(0, 400)}`]
      const res = JSON.parse(r.out) as { path: string; sha256: string }
      const problems = await cacheProblems(cache, m)
      if ((await fileSha(res.path)) !== m.sha256) problems.push('restart returned an object that is not the image')
      return problems
    },
  }
}

// ---- the head's store: objects are their names; a served name is whole ----
const storeProblems = async (store: string, name: string, image: Buffer): Promise<string[]> => {
  const problems: string[] = []
  const objects = join(store, 'objects', 'sha256')
  for (const f of (await filesUnder(objects)).filter((f) => OBJECT_NAME.test(f))) {
    const got = await fileSha(join(objects, f))
    if (got !== f.replace('/', '')) problems.push(`store object ${f} holds bytes of sha256 ${got}`)
  }
  const current = join(store, 'names', name, 'current.json')
  if (existsSync(current)) {
    const entry = JSON.parse(await readFile(current, 'utf8')) as { sha256: string }
    if (entry.sha256 !== sha256(image)) problems.push(`name ${name} points at ${entry.sha256}, not the image published`)
    const obj = join(objects, entry.sha256.slice(0, 2), entry.sha256.slice(2))
    if (!existsSync(obj)) problems.push(`name ${name} is served but its object is missing`)
    try {
      parseManifest(await readFile(join(store, 'manifests', 'sha256', entry.sha256.slice(0, 2), entry.sha256.slice(2) + '.json'), 'utf8'), {
        pinned: { sha256: entry.sha256, size: image.length, by: 'the name' },
      })
    } catch (e) {
      problems.push(`name ${name} is served but its manifest is not whole: ${(e as Error).message}`)
    }
  }
  return problems
}

// ---- the head's events: acknowledged ⊆ stored; after the drain, each exactly once ----
const logIds = async (file: string): Promise<string[]> => {
  const text = await readFile(file, 'utf8').catch(() => '')
  const complete = text.slice(0, text.lastIndexOf('\n') + 1)
  return complete.split('\n').filter(Boolean).flatMap((l) => {
    try {
      return [(JSON.parse(l) as { id: string }).id]
    } catch {
      return []
    }
  })
}

t.test(`kill -9 at ≥ ${MIN_KILLS} seeded points of download, repair, publish, event append and unpack`, gate('nginx', 'squashfs-tools'), async (t) => {
  const dir = t.testdir({ www: {} })
  const agent = await bundleAgent(join(dir, 'bundle'))
  const rnd = seededRandom(KILL_SEED)
  t.comment(`seed ${KILL_SEED}, quota ${QUOTA} kills per scenario and point`)

  // The image, its manifest (the real builder: xxh64 segments included) and nginx serving both.
  const imagePath = join(dir, 'www', 'img.sqfs')
  const image = await writeImage(imagePath, IMAGE_BYTES, KILL_SEED)
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const m = await buildManifest(imagePath, {
    name: 'img', urls: [`${ng.url}/img.sqfs`], workers: 0,
    chunking: { algorithm: 'fastcdc-gear-v1', minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024 },
  })
  await writeFile(join(dir, 'www', 'img.json'), serializeManifest(m))
  const url = `${ng.url}/img.json`

  // A clean cached copy, for the repair scenario to damage.
  const golden = join(dir, 'golden')
  t.equal((await runNode([agent, 'fetch', url, '--cache', golden, '--json']).done).code, 0, 'a clean fetch for the repair scenario')
  const objRel = join('objects', 'sha256', m.sha256.slice(0, 2), m.sha256.slice(2))

  // The golden copy damaged: six chunks overwritten in place (same size); lookup finds them, the fetch repairs only them.
  const damagedDir = join(dir, 'damaged')
  await cp(golden, damagedDir, { recursive: true })
  const dfh = await open(join(damagedDir, objRel), 'r+')
  for (let k = 0; k < 6; k++) await dfh.write(Buffer.alloc(64, 0xee), 0, 64, m.chunks[Math.floor((k * m.chunks.length) / 6)]!.offset + 7)
  await dfh.close()
  const damagedSha = await fileSha(join(damagedDir, objRel))
  // A download killed half-way (its verified chunks recorded): what the resume scenario starts from.
  const halfDir = join(dir, 'half')
  const half = await runNode([agent, 'fetch', url, '--cache', halfDir, '--json', '--streams', '4'], { BOOT_AGENT_FAULT: 'download.progress-recorded:2' }).done
  t.equal(half.signal, 'SIGKILL', 'a download killed half-way, for the resume scenario')
  const fresh = (name: string, from?: string) => async () => {
    const cache = join(dir, `cache-${name}`)
    await rm(cache, { recursive: true, force: true })
    if (from) await cp(from, cache, { recursive: true })
  }
  const scenarios: Scenario[] = [
    fetchScenario('download', agent, join(dir, 'cache-download'), url, m, fresh('download')),
    fetchScenario('resume', agent, join(dir, 'cache-resume'), url, m, fresh('resume', halfDir)),
    fetchScenario('repair', agent, join(dir, 'cache-repair'), url, m, fresh('repair', damagedDir), damagedSha),
  ]

  // Publish into a head-node store.
  const store = join(dir, 'store')
  const publishArgs = [agent, 'publish', imagePath, '--name', 'img', '--store', store, '--arch', 'x86_64']
  scenarios.push({
    name: 'publish',
    reset: () => rm(store, { recursive: true, force: true }),
    run: (env) => runNode(publishArgs, env).done,
    afterKill: () => storeProblems(store, 'img', image),
    async restart() {
      const r = await runNode(publishArgs).done
      if (r.code !== 0) return [`restart exited ${r.code}: ${r.err.slice(0, 400)}`]
      const problems = await storeProblems(store, 'img', image)
      if (!existsSync(join(store, 'names', 'img', 'current.json'))) problems.push('the restarted publish did not move the name')
      return problems
    },
  })

  // The head's event append, fed by a node's real spool and sender.
  const headDir = join(dir, 'head')
  const nodesFile = join(dir, 'nodes.json')
  await writeNodes(nodesFile, { schema: 1, nodes: { n1: {} } })
  const spoolDir = join(dir, 'spool')
  const made: string[] = []
  const acked = new Set<string>()
  let headPort = 0
  const startHeadChild = async (env: Record<string, string>) => {
    headPort = await freePort()
    const h = runNode([agent, 'head', '--store', headDir, '--init', '--nodes', nodesFile, '--listen', `127.0.0.1:${headPort}`, '--rate', '100000'], env)
    for (let i = 0; i < 200; i++) {
      const up = await fetch(`http://127.0.0.1:${headPort}/v1/nodes/n1/boot`).then(() => true, () => false)
      if (up) break
      await new Promise((r) => setTimeout(r, 25))
    }
    return h
  }
  /** Sends the whole spool; returns false when the head stopped answering. */
  const drain = async (): Promise<boolean> => {
    const spool = new Spool(spoolDir)
    await spool.init()
    const sender = new Sender({ server: `http://127.0.0.1:${headPort}`, node: 'n1', spools: [spool], batchSize: 3, requestTimeoutMs: 5_000 })
    for (let round = 0; round < 50; round++) {
      const before = new Set((await spool.peek(10_000)).map((s) => s.event.id))
      if (before.size === 0) return true
      let ok = true
      await sender.flushOnce().catch(() => (ok = false))
      const after = new Set((await spool.peek(10_000)).map((s) => s.event.id))
      // Taken out of the spool = the head answered 200 for it.
      for (const id of before) if (!after.has(id)) acked.add(id)
      if (!ok) return false
    }
    return false
  }
  const eventProblems = async (final: boolean): Promise<string[]> => {
    const ids = await logIds(join(headDir, 'events', 'n1.jsonl'))
    const counts = new Map<string, number>()
    for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
    const problems: string[] = []
    for (const id of acked) if (!counts.has(id)) problems.push(`event ${id} was acknowledged but is not in the head's log`)
    for (const [id, n] of counts) if (n > 1) problems.push(`event ${id} is stored ${n} times`)
    if (final) for (const id of made) if (!counts.has(id)) problems.push(`event ${id} never reached the head's log`)
    return problems
  }
  scenarios.push({
    name: 'event-append',
    async reset() {
      const spool = new Spool(spoolDir)
      await spool.init()
      const batch: AgentEvent[] = Array.from({ length: 15 }, (_, i) =>
        makeEvent('fallback', 'n1', { kind: 'root-missing', reason: `event ${made.length + i} ${'x'.repeat(200)}`, requestedStyle: 'disked', style: null }))
      await spool.append(...batch)
      made.push(...batch.map((e) => e.id))
    },
    async run(env) {
      const h = await startHeadChild(env)
      const finished = await drain()
      if (!finished) return h.done
      // The point was not passed this time: stop the head as a crash would, and do not count it as landed.
      h.kill()
      return { ...(await h.done), signal: 'SIGKILL by the test (point not reached)' }
    },
    afterKill: () => eventProblems(false),
    async restart() {
      const h = await startHeadChild({})
      const drained = await drain()
      h.kill()
      await h.done
      return [...(drained ? [] : ['the spool did not drain after the restart']), ...(await eventProblems(true))]
    },
  })

  // A disked root's unpack (real mksquashfs, real unsquashfs).
  const tree = join(dir, 'tree')
  // Eight top-level entries: the unpack moves each up on its own (unpack.moved).
  for (const d of ['sbin', 'etc', join('usr', 'lib'), 'var', 'opt', 'srv', 'home', 'root']) await mkdir(join(tree, d), { recursive: true })
  await writeFile(join(tree, 'var', 'v'), 'v\n')
  await writeFile(join(tree, 'opt', 'o'), 'o\n')
  await writeFile(join(tree, 'sbin', 'init'), '#!/bin/sh\n')
  await chmod(join(tree, 'sbin', 'init'), 0o755)
  for (let i = 0; i < 6; i++) await writeFile(join(tree, i % 2 ? 'etc' : join('usr', 'lib'), `f${i}`), `file ${i}\n`.repeat(100 * (i + 1)))
  const sqfs = join(dir, 'root.sqfs')
  const mk = await runNode(['-e', `require('child_process').execFileSync('mksquashfs', [${JSON.stringify(tree)}, ${JSON.stringify(sqfs)}, '-noappend', '-quiet', '-all-root'], { stdio: 'inherit' })`]).done
  t.equal(mk.code, 0, 'mksquashfs built the root image')
  const sqfsSha = await fileSha(sqfs)
  const expected = await filesUnder(tree)
  const driver = join(dir, 'bundle', 'unpack-driver.mjs')
  await build({
    entryPoints: [join(process.cwd(), 'test', 'faults', 'unpack-driver.ts')], outfile: driver, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning',
    banner: { js: "import { createRequire as __cr } from 'node:module';const require = __cr(import.meta.url);" },
    define: { __BOOT_AGENT_PINO__: JSON.stringify('pino') },
  })
  const root = join(dir, 'root')
  const rootProblems = async (whole: boolean): Promise<string[]> => {
    const files = await filesUnder(root)
    const problems: string[] = []
    const marked = files.includes('.boot-agent-image')
    const rest = files.filter((f) => f !== '.boot-agent-image')
    if ((whole || marked) && JSON.stringify(rest) !== JSON.stringify(expected)) problems.push(`root ${marked ? 'with the marker ' : ''}is not the image's tree: ${rest.join(', ')}`)
    if (whole && !marked) problems.push('no marker after the restart')
    if (whole || marked) for (const f of expected) if ((await fileSha(join(root, f))) !== (await fileSha(join(tree, f)))) problems.push(`${f} differs from the image`)
    return problems
  }
  const unpackArgs = [driver, sqfs, root, sqfsSha, String((await stat(sqfs)).size)]
  scenarios.push({
    name: 'unpack',
    async reset() {
      // A root left by an older boot: the unpack must wipe it.
      await rm(root, { recursive: true, force: true })
      await mkdir(join(root, 'old'), { recursive: true })
      await writeFile(join(root, 'old', 'stale'), 'from the previous image')
    },
    run: (env) => runNode(unpackArgs, env).done,
    afterKill: () => rootProblems(false),
    async restart() {
      const r = await runNode(unpackArgs).done
      if (r.code !== 0) return [`restart exited ${r.code}: ${r.err.slice(0, 400)}`]
      return rootProblems(true)
    },
  })

  // ---- count the passes of every point, per scenario ----
  const passes = new Map<string, Map<string, number>>()
  for (const s of scenarios) {
    const traceFile = join(dir, `trace-${s.name}`)
    await rm(traceFile, { force: true })
    await s.reset()
    const r = await s.run({ BOOT_AGENT_FAULT_TRACE: traceFile })
    const problems = await s.restart()
    t.same(problems, [], `${s.name}: the traced run (${r.signal ?? `exit ${r.code}`}) and its restart hold the invariants`)
    const counts = new Map<string, number>()
    for (const p of (await readFile(traceFile, 'utf8').catch(() => '')).split('\n').filter(Boolean)) counts.set(p, (counts.get(p) ?? 0) + 1)
    passes.set(s.name, counts)
    t.comment(`${s.name}: passes ${[...counts].map(([p, n]) => `${p}×${n}`).join(', ')}`)
  }
  const reached = new Set([...passes.values()].flatMap((c) => [...c.keys()]))
  t.same(FAULT_POINTS.filter((p) => !reached.has(p)), [], `every one of the ${FAULT_POINTS.length} kill points is passed by a scenario`)

  // ---- draw the kills ----
  const kills: { s: Scenario; point: string; n: number }[] = []
  for (const s of scenarios) {
    for (const [point, count] of passes.get(s.name)!) {
      const picks = new Set<number>([1])
      if (count > 1) picks.add(count)
      while (picks.size < Math.min(QUOTA, count)) picks.add(1 + Math.floor(rnd() * count))
      for (const n of [...picks].sort((a, b) => a - b)) kills.push({ s, point, n })
    }
  }
  t.comment(`${kills.length} kills drawn: ${kills.map((k) => `${k.s.name} ${k.point}:${k.n}`).join('; ')}`)

  let landed = 0
  let failed = 0
  const t0 = Date.now()
  const queue = [...scenarios]
  const worker = async (): Promise<void> => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      for (const k of kills.filter((k) => k.s === s)) {
        await k.s.reset()
        const r = await k.s.run({ BOOT_AGENT_FAULT: `${k.point}:${k.n}` })
        const killed = r.signal === 'SIGKILL'
        if (killed) landed++
        const left = await k.s.afterKill()
        const after = await k.s.restart()
        const problems = [...left.map((p) => `after the kill: ${p}`), ...after.map((p) => `after the restart: ${p}`)]
        if (problems.length) failed++
        if (problems.length) t.fail(`${k.s.name} ${k.point}:${k.n} (${killed ? 'killed' : `not killed: exit ${r.code}`}): ${problems.join('; ')}`)
      }
    }
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker))
  const perScenario = scenarios.map((s) => `${s.name} ${kills.filter((k) => k.s === s).length}`).join(', ')
  t.comment(`${landed} of ${kills.length} kills landed (${perScenario}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  t.ok(landed >= MIN_KILLS, `at least ${MIN_KILLS} kills landed on a named point (${landed})`)
  t.equal(failed, 0, `every kill and restart held the invariants (${kills.length - failed} of ${kills.length})`)
})
