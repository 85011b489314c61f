/**
 * Start-up benchmark (docs/performance.md, "Boot stage"; issue goal: bundled
 * agent start-up to first action ≤ 150 ms). Every command pays it, so it is
 * timed where it shows:
 *
 * - `boot-agent --help`, `boot-agent verify --help`: process start to exit,
 *   wall (spawn to exit) and CPU (user + system, GNU time);
 * - `boot-agent boot`: `timings.startup` from the boot record (ms from process
 *   start to the boot command's first line, as bench/boot-hit.ts reads it),
 *   against a local head node that answers 404, so the stage stops at its
 *   first request (`rd.bootagent.onfail=emergency`: no reboot wait);
 * - a bare `node -e ''` next to them (and with this shell's NODE_EXTRA_CA_CERTS,
 *   when it sets one: every case runs in bench/lib.ts agentEnv, without it).
 *
 * Cases alternate within each run, so the shared machine's load spreads over
 * all of them. `--baseline ENTRY` adds a second bundle (e.g. one built from
 * another commit) to compare in the same run.
 *
 * usage: npm run bench -- startup [--runs N] [--baseline path/to/boot-agent.mjs]
 * Needs no root.
 */
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { agentEnv, median, withTempDir } from './lib.js'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' }, baseline: { type: 'string' } } })
const RUNS = Number(values.runs)
const AGENTS: Array<[string, string]> = [['this tree', join(process.cwd(), 'dist', 'boot-agent.mjs')]]
if (values.baseline) AGENTS.push(['baseline', values.baseline])

interface Run {
  wallMs: number
  cpuMs: number
  stdout: string
}

/** Runs `node ARGS` under GNU time (in agentEnv() unless `env` is given); any exit code is fine (a failed boot exits 1). */
const timeNode = (args: string[], env: NodeJS.ProcessEnv = agentEnv()): Promise<Run> =>
  new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    const child = spawn('/usr/bin/time', ['-f', '__CPU__ %U %S', process.execPath, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', () => {
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6
      const m = /__CPU__ ([\d.]+) ([\d.]+)/.exec(stderr)
      if (!m) return reject(new Error(`no CPU time from /usr/bin/time for node ${args.join(' ')}: ${stderr.slice(-500)}`))
      resolve({ wallMs, cpuMs: (Number(m[1]) + Number(m[2])) * 1000, stdout })
    })
  })

const loadavg = async (): Promise<string> => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')

await withTempDir('ba-startup-bench-', async (dir) => {
  // A head node that knows no one: the boot stage's first request fails at once.
  const server = createServer((req, res) => {
    req.resume()
    res.statusCode = 404
    res.end('no such node\n')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const cmdline = join(dir, 'cmdline')
  await writeFile(cmdline, `rd.bootagent.server=${url} rd.bootagent.node=bench rd.bootagent.onfail=emergency\n`)
  try {
    const cases: Array<{ name: string; args: string[]; env?: NodeJS.ProcessEnv; boot?: boolean; runs: Run[]; startups: number[] }> = [
      { name: "bare `node -e ''`", args: ['-e', ''], runs: [], startups: [] },
    ]
    // What a NODE_EXTRA_CA_CERTS in this shell would add to every run (agentEnv drops it, as a node has none).
    if (process.env.NODE_EXTRA_CA_CERTS) {
      cases.push({ name: `bare \`node -e ''\` with this shell's NODE_EXTRA_CA_CERTS=${process.env.NODE_EXTRA_CA_CERTS}`, args: ['-e', ''], env: { ...process.env }, runs: [], startups: [] })
    }
    for (const [label, entry] of AGENTS) {
      const boot = ['boot', '--cmdline-file', cmdline, '--run-dir', join(dir, 'run'), '--sysroot', join(dir, 'sysroot'), '--json']
      cases.push({ name: `${label}: \`--help\``, args: [entry, '--help'], runs: [], startups: [] })
      cases.push({ name: `${label}: \`verify --help\``, args: [entry, 'verify', '--help'], runs: [], startups: [] })
      cases.push({ name: `${label}: \`boot\` (to a 404)`, args: [entry, ...boot], boot: true, runs: [], startups: [] })
    }
    const loadBefore = await loadavg()
    for (let i = 0; i < RUNS; i++) {
      for (const c of cases) {
        const r = await timeNode(c.args, c.env)
        c.runs.push(r)
        if (c.boot) {
          const record = JSON.parse(r.stdout) as { timings?: { startup?: number } }
          if (typeof record.timings?.startup !== 'number') throw new Error(`no timings.startup in the boot record: ${r.stdout.slice(0, 500)}`)
          c.startups.push(record.timings.startup)
        }
      }
    }
    const loadAfter = await loadavg()
    const out = [
      `Start-up, medians of ${RUNS} alternating runs, load average ${loadBefore} before, ${loadAfter} after (node ${process.version}):`,
      '',
      '| what | wall ms | CPU ms | `timings.startup` ms (goal ≤ 150) |',
      '|---|---|---|---|',
      ...cases.map(
        (c) =>
          `| ${c.name} | ${median(c.runs.map((r) => r.wallMs)).toFixed(0)} | ${median(c.runs.map((r) => r.cpuMs)).toFixed(0)} | ${c.boot ? `**${median(c.startups)}** (runs ${c.startups.join(' ')})` : ''} |`,
      ),
    ]
    process.stdout.write(out.join('\n') + '\n')
  } finally {
    server.close()
  }
})
