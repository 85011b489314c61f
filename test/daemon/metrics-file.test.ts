/**
 * The node's Prometheus textfile (#21 build item 2): rendered from a boot
 * record and the daemon's counters, accepted by `promtool check metrics`,
 * written by the real daemon (the bundled CLI, real /dev/kmsg) and served by
 * the real node_exporter's textfile collector, scraped with curl.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { promtoolCheck, startNodeExporter } from '../helpers/prometheus.js'
import { bundleAgent } from '../helpers/bundle.js'
import { parseBootRecord } from '../../agent/daemon/boot-record.js'
import { renderNodeMetrics } from '../../agent/daemon/metrics-file.js'

const SHA = 'fe91bed4ff8c0123456789abcdef0123456789abcdef0123456789abcdef0123'
const record = {
  schema: 1, node: 'cn7', server: 'http://head:8080', style: 'cache-squashfs', requestedStyle: 'disked',
  fallbacks: [{ kind: 'no-root-partition', reason: 'LABEL=cwroot not found' }],
  image: { name: 'CPE-base', sha256: SHA, size: 1234 },
  cache: { spec: 'LABEL=cwcache', hit: false, verifiedBy: 'download', inRam: false },
  root: { spec: 'LABEL=cwroot' }, bytesFetched: 1_048_576, bytesReused: 524_288,
  timings: { startup: 120, fetch: 2_400, mount: 35, total: 2_700 }, result: 'ok', spoolDir: '/run/boot-agent/spool', time: '2026-12-07T19:00:00.000Z',
}

t.test('the textfile holds the boot, the cache hit, bytes, fallbacks, errors by kind, spool depth and kmsg losses, and promtool accepts it', gate('promtool'), async (t) => {
  const text = await renderNodeMetrics({
    node: 'cn7', bootRecord: parseBootRecord(JSON.stringify(record)),
    stats: { kmsgLost: 3, spooled: 5, lostEvents: 0, errorsByKind: { 'squashfs-error': 12, 'io-error': 0, integrity: 1 } },
    slurm: { drains: 1, resumes: 0, failures: 0, dryRuns: 0 },
  })
  for (const line of [
    `boot_agent_boot_info{node="cn7",sha256="${SHA}",name="CPE-base",style="cache-squashfs",result="ok"} 1`,
    'boot_agent_boot_success 1',
    'boot_agent_boot_duration_seconds 2.7',
    'boot_agent_boot_step_duration_seconds{step="fetch"} 2.4',
    'boot_agent_boot_cache_hit 0',
    'boot_agent_boot_fetched_bytes 1048576',
    'boot_agent_boot_reused_bytes 524288',
    'boot_agent_boot_fallbacks 1',
    'boot_agent_boot_fallbacks_by_kind{kind="no-root-partition"} 1',
    'boot_agent_errors_total{kind="squashfs-error"} 12',
    'boot_agent_errors_total{kind="integrity"} 1',
    'boot_agent_spool_events 5',
    'boot_agent_kmsg_lost_records_total 3',
    'boot_agent_slurm_actions_total{action="drain"} 1',
  ]) t.ok(text.split('\n').includes(line), line)
  t.notMatch(text, /step="total"/, 'the total is its own metric, not a step')
  const check = await promtoolCheck(text)
  t.equal(check.code, 0, `promtool check metrics: ${check.output.trim() || 'clean'}`)
  t.equal(check.output.trim(), '', 'no lint findings')
})

t.test('the daemon writes the file atomically into the collector dir and node_exporter serves it (curl)', gate('root', 'kmsg', 'node-exporter', 'promtool'), async (t) => {
  const dir = t.testdir()
  const textfiles = join(dir, 'textfile')
  await mkdir(textfiles)
  const brPath = join(dir, 'boot-record.json')
  // No head node (events stay spooled) and the boot stage's spool in the test dir.
  await writeFile(brPath, JSON.stringify({ ...record, server: undefined, spoolDir: join(dir, 'boot-spool') }))
  const cli = await bundleAgent(dir)
  const exporter = await startNodeExporter(textfiles)
  t.teardown(() => exporter.stop())
  const code = await new Promise<number | null>((resolve) => {
    const c = spawn(process.execPath, [cli, 'daemon', '--once', '--node', 'cn7', '--boot-record', brPath, '--state-dir', join(dir, 'state'),
      '--heartbeat-interval', '0', '--no-self-check', '--metrics-file', join(textfiles, 'boot-agent.prom')], { stdio: ['ignore', 'ignore', 'ignore'] })
    c.on('exit', resolve)
  })
  t.equal(code, 0, 'daemon --once exited 0')
  t.same(await readdir(textfiles), ['boot-agent.prom'], 'one file, no temp file left behind')
  const file = await readFile(join(textfiles, 'boot-agent.prom'), 'utf8')
  t.equal((await promtoolCheck(file)).code, 0, 'promtool accepts the file the daemon wrote')
  const scraped = await exporter.scrape()
  t.match(scraped, `boot_agent_boot_info{name="CPE-base",node="cn7",result="ok",sha256="${SHA}",style="cache-squashfs"} 1`, 'node_exporter serves the running digest as a label')
  t.match(scraped, /\nboot_agent_boot_duration_seconds 2\.7\n/, 'and the boot duration')
  t.match(scraped, /\nboot_agent_errors_total\{kind="squashfs-error"\} \d+\n/, 'and errors by kind')
  t.match(scraped, /\nboot_agent_spool_events \d+\n/, 'and the spool depth')
  t.match(scraped, /\nboot_agent_kmsg_lost_records_total \d+\n/, 'and kmsg losses')
  t.match(scraped, /\nnode_textfile_scrape_error 0\n/, 'node_exporter read the file without error')
})

t.test('a metrics file in a directory that is not there is refused before the daemon starts', async (t) => {
  const dir = t.testdir()
  const cli = await bundleAgent(dir)
  const out = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const c = spawn(process.execPath, [cli, 'daemon', '--once', '--node', 'cn7', '--state-dir', join(dir, 'state'), '--metrics-file', join(dir, 'nope', 'boot-agent.prom')], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    c.on('exit', (code) => resolve({ code, stderr }))
  })
  t.equal(out.code, 2, 'a usage error')
  t.match(out.stderr, /--metrics-file: directory .*nope does not exist/, out.stderr.trim().split('\n').pop() ?? '')
})
