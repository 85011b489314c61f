/**
 * kill -9 of the real CLI (the bundled agent, a child process) at seeded
 * random instants of a fetch, each followed by a rerun: the rerun must end
 * with the verified object, and fetch again no more than what the killed run
 * had not yet recorded as verified (its state file) plus one chunk per
 * parallel stream.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { seededRandom } from '../../agent/transport/mirrors.js'
import { bundleAgent } from '../helpers/bundle.js'
import { gate } from '../helpers/capability.js'
import { manifestFor, sha256Hex, writeImage } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'

const MiB = 1024 * 1024
const IMAGE_BYTES = 32 * MiB
const KILLS = 20
const STREAMS = 4
const SEED = 'kill9-v1'

const run = (agent: string, args: string[]) => {
  const child = spawn(process.execPath, [agent, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn' } })
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
  const done = new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, out, err })),
  )
  return { child, done }
}

t.test(`kill -9 at ${KILLS} seeded random points, each rerun ends verified and re-fetches only the unverified remainder`, gate('nginx'), async (t) => {
  const dir = t.testdir({ www: {} })
  const agent = await bundleAgent(dir)
  const data = await writeImage(join(dir, 'www', 'img.sqfs'), IMAGE_BYTES, SEED)
  const ng = await startNginx(join(dir, 'www'))
  t.teardown(() => ng.stop())
  const m = manifestFor(data, [`${ng.url}/img.sqfs`])
  await writeFile(join(dir, 'www', 'img.json'), serializeManifest(m))
  const maxChunk = Math.max(...m.chunks.map((c) => c.size))
  const cache = join(dir, 'cache')
  const args = ['fetch', `${ng.url}/img.json`, '--cache', cache, '--json', '--streams', String(STREAMS)]
  const settle = () => new Promise((r) => setTimeout(r, 250))
  const imageBytesSent = async () => (await ng.access()).filter((a) => a.path === '/img.sqfs').reduce((n, a) => n + a.bytes, 0)

  // One uninterrupted run sets the time scale of the kill points.
  const t0 = performance.now()
  const full = await run(agent, args).done
  const fullMs = performance.now() - t0
  t.equal(full.code, 0, `uninterrupted fetch: ${full.err}`)
  t.comment(`uninterrupted fetch of ${IMAGE_BYTES} bytes took ${Math.round(fullMs)} ms`)

  const rnd = seededRandom(SEED)
  const remainders: number[] = []
  for (let k = 0; k < KILLS; k++) {
    await rm(cache, { recursive: true, force: true })
    const killAtMs = Math.round(rnd() * fullMs * 1.1)
    const victim = run(agent, args)
    await new Promise((r) => setTimeout(r, killAtMs))
    victim.child.kill('SIGKILL')
    const v = await victim.done
    await settle()
    // What the killed run had recorded as verified on disk.
    const sha = m.sha256
    let verified = 0
    let published = false
    try {
      await readFile(join(cache, 'objects', 'sha256', sha.slice(0, 2), sha.slice(2) + '.meta.json'))
      published = true
    } catch {
      /* not published */
    }
    if (!published) {
      try {
        const st = JSON.parse(await readFile(join(cache, 'tmp', `${sha}.state.json`), 'utf8')) as { verified: number[] }
        verified = st.verified.reduce((n, i) => n + m.chunks[i]!.size, 0)
      } catch {
        /* no state yet */
      }
    }
    const remainder = published ? 0 : IMAGE_BYTES - verified
    remainders.push(remainder)
    await ng.clearAccess()
    const rerun = await run(agent, args).done
    await settle()
    const sent = await imageBytesSent()
    t.equal(rerun.code, 0, `kill ${k} at ${killAtMs} ms (${v.signal ?? v.code}): rerun exits 0 ${rerun.err.slice(0, 300)}`)
    const res = JSON.parse(rerun.out) as { sha256: string; path: string; bytesDownloaded: number }
    t.equal(sha256Hex(await readFile(res.path)), m.sha256, `kill ${k}: object verified`)
    t.ok(
      sent <= remainder + STREAMS * maxChunk,
      `kill ${k}: rerun fetched ${sent} bytes ≤ unverified remainder ${remainder} + ${STREAMS} chunks of ≤ ${maxChunk}`,
    )
  }
  const mid = remainders.filter((r) => r > 0 && r < IMAGE_BYTES).length
  t.comment(`kills: ${remainders.filter((r) => r === IMAGE_BYTES).length} before any verified chunk, ${mid} mid-download, ${remainders.filter((r) => r === 0).length} after publish`)
  t.ok(mid >= 5, `at least 5 kills landed mid-download (got ${mid})`)
})
