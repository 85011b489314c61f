/**
 * kill -9 of the real CLI (the bundled agent, a child process without the test runner's NODE_OPTIONS) at seeded
 * random instants of a fetch, each followed by a rerun: the rerun must end
 * with the verified object, and fetch again no more than what the killed run
 * had not yet recorded as verified (its state file) plus one chunk per
 * parallel stream.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { seededRandom } from '../../agent/transport/mirrors.js'
import { bundleAgent } from '../helpers/bundle.js'
import { gate } from '../helpers/capability.js'
import { manifestFor, sha256Hex, writeImage } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'
import { startFaultProxy } from '../helpers/fault-proxy.js'

const MiB = 1024 * 1024
const IMAGE_BYTES = 32 * MiB
const KILLS = 20
const STREAMS = 4
const SEED = 'kill9-v1'

const run = (agent: string, args: string[]) => {
  const child = spawn(process.execPath, [agent, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '', BOOT_AGENT_LOG_LEVEL: 'warn' } })
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
  // The kill points are byte positions, not times (a loaded machine must not move them):
  // the proxy stops forwarding at the point, the fetch gets a moment to take in what it
  // received, then it is killed.
  const proxy = await startFaultProxy(ng.url)
  t.teardown(() => proxy.stop())
  const m = manifestFor(data, ['img.sqfs'])
  const manifestText = serializeManifest(m)
  await writeFile(join(dir, 'www', 'img.json'), manifestText)
  const maxChunk = Math.max(...m.chunks.map((c) => c.size))
  const cache = join(dir, 'cache')
  const args = ['fetch', `${proxy.url}/img.json`, '--cache', cache, '--json', '--streams', String(STREAMS)]
  const sha = m.sha256

  const rnd = seededRandom(SEED)
  const remainders: number[] = []
  for (let k = 0; k < KILLS; k++) {
    await rm(cache, { recursive: true, force: true })
    // 1 in 6 points at the very end of the transfer (kill during verification/publish).
    const atByte = k % 6 === 5 ? IMAGE_BYTES : Math.floor(rnd() * IMAGE_BYTES)
    const stalled = proxy.stallAfterTotal(Buffer.byteLength(manifestText) + atByte)
    const victim = run(agent, args)
    await Promise.race([stalled, victim.done])
    // Give the fetch time to write and record what it received (fsync is slow on a busy
    // disk), bounded; then a seeded extra moment so kills also land inside those writes.
    for (let i = 0; i < 60 && !(await stat(join(cache, 'tmp', `${sha}.state.json`)).then(() => true, () => false)); i++) {
      await new Promise((r) => setTimeout(r, 50))
    }
    await new Promise((r) => setTimeout(r, Math.floor(rnd() * 300)))
    victim.child.kill('SIGKILL')
    const v = await victim.done
    void proxy.stallAfterTotal(Infinity)
    // What the killed run had recorded as verified on disk.
    let verified = 0
    let published = false
    try {
      await readFile(join(cache, 'objects', 'sha256', sha.slice(0, 2), sha.slice(2) + '.meta.json'))
      await readFile(join(cache, 'objects', 'sha256', sha.slice(0, 2), sha.slice(2)), { flag: 'r' }).then(() => (published = true))
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
    const mark = proxy.requests.length
    const rerun = await run(agent, args).done
    const sent = proxy.requests.slice(mark).filter((q) => q.path === '/img.sqfs').reduce((n, q) => n + q.bytes, 0)
    t.equal(rerun.code, 0, `kill ${k} at byte ${atByte} (${v.signal ?? `exit ${v.code}`}): rerun exits 0 ${rerun.err.slice(0, 300)}`)
    const res = JSON.parse(rerun.out) as { sha256: string; path: string; bytesDownloaded: number }
    t.equal(sha256Hex(await readFile(res.path)), m.sha256, `kill ${k}: object verified`)
    t.ok(
      sent <= remainder + STREAMS * maxChunk,
      `kill ${k}: rerun fetched ${sent} bytes ≤ unverified remainder ${remainder} + ${STREAMS} chunks of ≤ ${maxChunk}`,
    )
  }
  const mid = remainders.filter((r) => r > 0 && r < IMAGE_BYTES).length
  t.comment(`kills: ${remainders.filter((r) => r === IMAGE_BYTES).length} before any recorded chunk, ${mid} mid-download, ${remainders.filter((r) => r === 0).length} after publish`)
  t.ok(mid >= KILLS / 2, `at least half the kills landed mid-download (got ${mid})`)
})
