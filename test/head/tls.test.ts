/**
 * The head node over https with a site CA (issue #21): the real head
 * (`startHead` with a certificate signed by a CA openssl makes here) serves
 * a real boot — the boot stage on real loop disks fetches its descriptor,
 * manifest and image over TLS, verified, unpacks the root — and then takes
 * the stage's spooled events; `boot-agent nodes` (the bundled CLI) lists the
 * node with the digest it booted. Without the CA the same head is refused.
 */
import t from 'tap'
import { join } from 'node:path'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { fetchDescriptor } from '../../agent/boot/descriptor.js'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { runBootStage } from '../../agent/boot/stage.js'
import { run as realRun, type Runner } from '../../agent/core/exec.js'
import { type Logger, silentLogger } from '../../agent/core/log.js'
import { commands } from '../../agent/core/system.js'
import { Spool } from '../../agent/events/spool.js'
import { publishImage } from '../../agent/head/publish.js'
import { startHead } from '../../agent/head/server.js'
import { buildManifest, serializeManifest } from '../../agent/manifest/index.js'
import { SITE_CA_ENV } from '../../agent/transport/trust.js'
import { gate } from '../helpers/capability.js'
import { writeNodes } from '../helpers/head-fixtures.js'
import { makeOsTree, mksquashfs, scratch, uniqueLabel } from '../helpers/loop.js'
import { makeCa } from '../helpers/pki.js'
import { runCliAsync } from '../helpers/run-cli.js'


/** A logger that keeps every line's message (the head's boot lines are asserted). */
const recordingLog = (lines: string[]): Logger => {
  const base = silentLogger()
  const rec = (level: string) => (a: unknown, b?: unknown) => void lines.push(`${level} ${typeof a === 'string' ? a : String(b ?? '')}`)
  return Object.assign(Object.create(base) as Logger, { info: rec('info'), warn: rec('warn'), error: rec('error'), child: () => recordingLog(lines) })
}

t.test('a head on https with a site CA serves a whole disked boot, takes its events, and lists the node', gate('root', 'loop', 'squashfs-tools', 'openssl'), async (t) => {
  const s = await scratch(t, 'ba-head-tls-')
  const pki = makeCa(s.dir)
  const cacheLabel = uniqueLabel('btc')
  const rootLabel = uniqueLabel('btr')
  await s.disk({ sizeMiB: 48, label: cacheLabel })
  await s.disk({ sizeMiB: 48, label: rootLabel })
  const tree = await makeOsTree(join(s.dir, 'tree'), { extraBytes: 256 * 1024 })
  const img = await mksquashfs(tree, join(s.dir, 'os.sqfs'))
  const store = join(s.dir, 'store')
  const pub = await publishImage({
    image: img,
    name: 'os',
    store,
    arch: 'x86_64',
    buildManifest: (p, o) => buildManifest(p, o),
    writeManifest: (m) => serializeManifest(m),
  })
  const nodes = await writeNodes(join(s.dir, 'nodes.json'), {
    schema: 1,
    defaults: { image: 'os', style: 'disked', partitions: { cache: `LABEL=${cacheLabel}`, root: `LABEL=${rootLabel}` } },
    nodes: { n1: {} },
  })
  const lines: string[] = []
  const head = await startHead({ store, nodes, tls: { certFile: pki.cert, keyFile: pki.key }, log: recordingLog(lines) })
  t.teardown(() => head.close({ abort: true }))
  t.match(head.url, /^https:\/\/127\.0\.0\.1:\d+$/)

  // This process's agent trusts the site CA (read at its first https request).
  const saved = process.env[SITE_CA_ENV]
  process.env[SITE_CA_ENV] = pki.ca
  t.teardown(() => {
    if (saved === undefined) delete process.env[SITE_CA_ENV]
    else process.env[SITE_CA_ENV] = saved
  })

  const runDir = join(s.dir, 'run')
  const noReboot: Runner = async (cmd, args, o) => (cmd === commands.reboot ? { exitCode: 0, signal: null, stdout: '', stderr: '' } : realRun(cmd, args, o))
  const out = await runBootStage({
    cmdline: parseBootCmdline(`rd.bootagent.server=${head.url} rd.bootagent.node=n1 rd.bootagent.devtimeout=1 rd.bootagent.rebootdelay=0`),
    runDir,
    sysroot: join(s.dir, 'sysroot'),
    pipeline: cachePipeline,
    log: silentLogger(),
    run: noReboot,
    sleep: async () => {},
  })
  t.equal(out.exitCode, 0, out.record.error?.message ?? 'the boot over https succeeded')
  t.match(out.record, { result: 'ok', style: 'disked', image: { sha256: pub.sha256 }, cache: { hit: false, verifiedBy: 'download' } })
  t.ok(out.record.bytesFetched >= pub.size, 'the image came over TLS from the head')

  // The stage delivered its events over the same TLS before it ended.
  t.same(await new Spool(out.record.spoolDir!).peek(10), [], 'nothing left in the spool')
  t.ok(lines.some((l) => /^info node n1 booted \(os@[0-9a-f]{12}, disked, cache miss\)$/.test(l)), `one info line for the boot: ${lines.filter((l) => l.includes('n1')).join(' | ')}`)

  const listed = await runCliAsync(['nodes', '--head', head.url, '--json'], { env: { [SITE_CA_ENV]: pki.ca, NODE_EXTRA_CA_CERTS: undefined } })
  t.equal(listed.status, 0, listed.stderr)
  const row = (JSON.parse(listed.stdout) as { nodes: Array<Record<string, unknown>> }).nodes.find((r) => r.node === 'n1')
  t.match(row, { node: 'n1', configured: true, image: 'os', running: pub.sha256, lastBoot: { result: 'ok', style: 'disked', cacheHit: false }, fallbacks: [], errors: { integrity: 0, squashfs: 0, io: 0 } })
  const table = await runCliAsync(['nodes', '--head', head.url], { env: { [SITE_CA_ENV]: pki.ca, NODE_EXTRA_CA_CERTS: undefined } })
  t.match(table.stdout, /^NODE\s+IMAGE\s+RUNNING\s+LAST BOOT\s+RESULT/)
  t.match(table.stdout, new RegExp(`\\nn1\\s+os\\s+${pub.sha256.slice(0, 12)}\\s+\\S+Z\\s+ok/disked\\s+-\\s+0/0/0`))

  // Without the CA, the node refuses the head at once, naming what to do.
  const refused = await runCliAsync(['nodes', '--head', head.url], { env: { [SITE_CA_ENV]: undefined, NODE_EXTRA_CA_CERTS: undefined } })
  t.equal(refused.status, 1)
  t.match(refused.stderr, /BOOT_AGENT_CA=FILE/)
  delete process.env[SITE_CA_ENV]
  const err = await fetchDescriptor(head.url, 'n1', { timeoutMs: 5000, attempts: 3, sleep: async () => {} }).catch((e: unknown) => e)
  t.match(err, { message: /BOOT_AGENT_CA/ }, 'the boot stage too (its agent was built with the CA: a new CA file id is a new agent)')
})
