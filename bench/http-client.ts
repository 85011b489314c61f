/**
 * Issue 17's question: does undici (Node's own HTTP engine, `request` with a
 * keep-alive Agent) read image bytes as fast as the hand-written HTTP/1.1
 * client (agent/transport/direct-http.ts)? undici in two ways: `request`
 * (its body a Readable; bench/http-client/undici-get.ts) and `dispatch` with
 * a handler (its lowest public layer; undici-dispatch-get.ts), each behind
 * direct-http.ts's `directGet`. Timed in rotating order in every round on the
 * same file from the same nginx (default 1 GiB of random bytes, loopback):
 *
 *   receive    the client alone: one GET of the whole file read into a 4 MiB
 *              buffer and dropped (a child process, after a one-byte request,
 *              timed from the request to the last byte), against
 *              `curl -o /dev/null`; node-fetch too (transport/http.ts
 *              openBody + pieceReader: https mirrors, redirects, chunked bodies)
 *   small      one process making one small GET (the manifest) and exiting,
 *              as the descriptor, manifest and event requests are made:
 *              node-fetch against undici `request` and Node's global fetch
 *              (undici inside Node), `node -e ''` for the floor
 *   download   `boot-agent fetch` (verified: chunk sha256, whole-image
 *              xxh64 + sha256, O_DIRECT writes, fsync) as bundled, against the
 *              same bundle with each undici variant in place of
 *              direct-http.ts, against `curl -o FILE && sync` (each cold: no
 *              cached object, dirty pages flushed)
 *
 * usage: npm run bench -- http-client [--size-mib N] [--runs N]
 */
import { spawn } from 'node:child_process'
import { readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { build, type Plugin } from 'esbuild'
import { agentEnv, gbps, makeServedImage, median, timeCommand, withTempDir } from './lib.js'
import { startNginx } from '../test/helpers/nginx.js'
import { bundleOptions, pinoOptions } from '../scripts/bundle-lib.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
/** The modules standing in for direct-http.ts, by client name. */
const CLIENTS = {
  'undici request': join(HERE, 'http-client', 'undici-get.ts'),
  'undici dispatch': join(HERE, 'http-client', 'undici-dispatch-get.ts'),
}
const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

const { values, positionals } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '5' }, receive: { type: 'string' } },
  allowPositionals: true,
})

/** Child mode: GET `url` whole with one client, print the seconds from the request to the last byte. */
const receiveOnce = async (client: string, url: string): Promise<void> => {
  const buf = Buffer.allocUnsafe(RECEIVE_BUFFER_BYTES)
  if (client === 'node-fetch') {
    const { openBody, pieceReader } = await import('../agent/transport/http.js')
    const read = async (range: { start: number; end: number } | undefined) => {
      const b = await openBody(url, range)
      const next = pieceReader(b)
      let got = 0
      for (let n; (n = await next(buf)) > 0; ) got += n
      return { got, length: b.length }
    }
    await read({ start: 0, end: 1 })
    const started = process.hrtime.bigint()
    const { got, length } = await read(undefined)
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    if (got !== length) throw new Error(`node-fetch: ${got} bytes, expected ${length}`)
    process.stdout.write(`${seconds}\n`)
    process.exit(0) // node-fetch's keep-alive agent would hold the process
  }
  const mod =
    client === 'undici request'
      ? await import('./http-client/undici-get.js')
      : client === 'undici dispatch'
        ? await import('./http-client/undici-dispatch-get.js')
        : await import('../agent/transport/direct-http.js')
  // One byte first, untimed: undici compiles its WebAssembly parser at its first
  // request (the agent pays that once per process: the download rows include it).
  const warm = await mod.directGet(url, { start: 0, end: 1 })
  while (warm && (await warm.read(buf)) > 0);
  const started = process.hrtime.bigint()
  const body = await mod.directGet(url, undefined)
  if (!body) throw new Error(`${client}: directGet declined ${url}`)
  let got = 0
  for (let n; (n = await body.read(buf)) > 0; ) got += n
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (got !== body.length) throw new Error(`${client}: ${got} bytes, expected ${body.length}`)
  mod.closeIdleConnections()
  process.stdout.write(`${seconds}\n`)
}

/** Bundles the agent as scripts/bundle.mjs does, with `standIn` in place of direct-http.ts. */
const bundleWith = async (standIn: string, outdir: string): Promise<string> => {
  const swap: Plugin = {
    name: 'direct-http-to-undici',
    setup(b) {
      b.onResolve({ filter: /\/direct-http\.js$/ }, (args) => (args.importer.endsWith('download.ts') ? { path: standIn } : undefined))
    },
  }
  await build({ ...bundleOptions(outdir), write: true, plugins: [swap] })
  await build({ ...pinoOptions(outdir), write: true })
  return join(outdir, 'boot-agent.mjs')
}

interface Contender {
  name: string
  run: () => Promise<number>
}

/** Runs every contender once per round, the order rotated each round; seconds per contender per round. */
const rounds = async (runs: number, cs: Contender[], between: () => Promise<void>): Promise<Map<string, number[]>> => {
  const out = new Map(cs.map((c) => [c.name, [] as number[]]))
  for (let i = 0; i < runs; i++) {
    for (let k = 0; k < cs.length; k++) {
      const c = cs[(i + k) % cs.length]!
      await between()
      out.get(c.name)!.push(await c.run())
    }
  }
  return out
}

const table = (title: string, bytes: number, res: Map<string, number[]>, ref: string): string[] => {
  const base = res.get(ref)!
  const lines = [`${title}`, '', `| contender | median s | GB/s | median ratio (contender / ${ref}) | per-round ratios | raw seconds |`, '|---|---|---|---|---|---|']
  for (const [name, xs] of res) {
    const ratios = xs.map((x, i) => x / base[i]!)
    lines.push(
      `| ${name} | ${median(xs).toFixed(3)} | ${bytes >= 1024 * 1024 ? gbps(bytes, median(xs)) : '—'} | ${(median(xs) / median(base)).toFixed(2)} | ${ratios.map((r) => r.toFixed(2)).join(' ')} | ${xs.map((x) => x.toFixed(3)).join(' ')} |`,
    )
  }
  return [...lines, '']
}

const child = (client: string, url: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--receive', client, url], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    p.on('error', reject)
    p.on('close', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`receive ${client} exited ${code}`))))
  })

if (values.receive) {
  await receiveOnce(values.receive, positionals[0]!)
} else {
  const sizeBytes = Number(values['size-mib']) * 1024 * 1024
  const runs = Number(values.runs)
  await withTempDir('ba-bench-http-client-', async (dir) => {
    const { www, image } = await makeServedImage(dir, sizeBytes)
    const request = await bundleWith(CLIENTS['undici request'], join(dir, 'dist-undici-request'))
    const dispatch = await bundleWith(CLIENTS['undici dispatch'], join(dir, 'dist-undici-dispatch'))
    const ng = await startNginx(www)
    try {
      const imageUrl = `${ng.url}/image.squashfs`
      const manifestPath = join(www, 'image.manifest.json')
      const agent = (entry: string, args: string[]) => timeCommand(process.execPath, [entry, ...args], { rss: true, env: agentEnv() })
      await agent('dist/boot-agent.mjs', ['manifest', image, '--name', 'bench', '--url', imageUrl, '--out', manifestPath])
      const manifestUrl = `${ng.url}/image.manifest.json`
      const sha = (JSON.parse(await readFile(manifestPath, 'utf8')) as { sha256: string }).sha256
      const cache = join(dir, 'cache')
      const curlOut = join(dir, 'curl.out')
      const rss = new Map<string, number>()
      const fetchWith = (name: string, entry: string) => async () => {
        const t = await agent(entry, ['fetch', manifestUrl, '--cache', cache])
        rss.set(name, Math.max(rss.get(name) ?? 0, t.maxRssKiB ?? 0))
        return t.seconds
      }
      await timeCommand('dd', [`if=${image}`, 'of=/dev/null', 'bs=4M', 'status=none']) // nginx serves from the page cache from the first round on
      const receive = await rounds(
        runs,
        [
          { name: 'direct-http', run: () => child('direct', imageUrl) },
          { name: 'undici request', run: () => child('undici request', imageUrl) },
          { name: 'undici dispatch', run: () => child('undici dispatch', imageUrl) },
          { name: 'node-fetch', run: () => child('node-fetch', imageUrl) },
          { name: 'curl -o /dev/null', run: async () => (await timeCommand('curl', ['-sS', '-o', '/dev/null', imageUrl])).seconds },
        ],
        async () => undefined,
      )
      const download = await rounds(
        runs,
        [
          { name: 'boot-agent fetch (direct-http)', run: fetchWith('direct-http', 'dist/boot-agent.mjs') },
          { name: 'boot-agent fetch (undici request)', run: fetchWith('undici request', request) },
          { name: 'boot-agent fetch (undici dispatch)', run: fetchWith('undici dispatch', dispatch) },
          {
            name: 'curl -o && sync',
            run: async () => (await timeCommand('sh', ['-c', 'curl -sS -o "$1" "$2" && sync', 'sh', curlOut, imageUrl])).seconds,
          },
        ],
        async () => {
          await rm(cache, { recursive: true, force: true })
          await rm(curlOut, { force: true })
          await timeCommand('sync', [])
        },
      )
      // Plain ESM from the repository's node_modules (no TypeScript loader: its start-up would swamp the difference).
      const oneGet = (code: string) => async () =>
        (await timeCommand(process.execPath, ['--input-type=module', '-e', code.replace('URL', JSON.stringify(manifestUrl))], { env: agentEnv() })).seconds
      const small = await rounds(
        runs * 3,
        [
          { name: "node -e ''", run: async () => (await timeCommand(process.execPath, ['-e', ''], { env: agentEnv() })).seconds },
          { name: 'node-fetch', run: oneGet("import fetch from 'node-fetch'; await (await fetch(URL)).arrayBuffer()") },
          { name: 'undici request', run: oneGet("import { request } from 'undici'; await (await request(URL)).body.arrayBuffer()") },
          { name: 'global fetch', run: oneGet('await (await fetch(URL)).arrayBuffer()') },
        ],
        async () => undefined,
      )
      const size = (await stat(image)).size
      process.stdout.write(
        [
          `http-client benchmark: ${size} bytes (sha256 ${sha.slice(0, 12)}…), ${runs} rounds, order rotated each round, ${new Date().toISOString()}`,
          '',
          ...table('receive only (one GET, body read into a 4 MiB buffer and dropped; node clients timed inside a child from request to last byte after a one-byte warm-up request, curl as a whole process)', size, receive, 'direct-http'),
          ...table('one small GET (the manifest) in a process, start to exit', (await stat(manifestPath)).size, small, "node -e ''"),
          ...table('verified download + fsync (the bundled agent, start-up included)', size, download, 'boot-agent fetch (direct-http)'),
          `peak RSS of the agent's fetch: ${[...rss].map(([k, v]) => `${k} ${(v / 1024).toFixed(0)} MB`).join(', ')}`,
          '',
        ].join('\n'),
      )
    } finally {
      await ng.stop()
    }
  })
}
