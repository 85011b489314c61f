/**
 * Origins we did not write (issue 20): Debian's Apache httpd and lighttpd as
 * a node's only image origin — started by the test with minimal configs on
 * free loopback ports (test/helpers/origins.ts), serving the head protocol's
 * files statically (test/helpers/static-head.ts). Their own Range, If-Range,
 * HEAD and multi-range answers are checked as the downloader meets them, and
 * a node boots (the boot stage, rwram, parallel ranges) from each.
 */
import t from 'tap'
import { join } from 'node:path'
import { chmod, mkdir, readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { runBootStage } from '../../agent/boot/stage.js'
import { silentLogger } from '../../agent/core/log.js'
import { gate } from '../helpers/capability.js'
import { hashTree, makeOsTree, mksquashfs, scratch, unmountUnder } from '../helpers/loop.js'
import { startOrigin, type OriginKind } from '../helpers/origins.js'
import { publishStatic } from '../helpers/static-head.js'

const MiB = 1024 * 1024

/** A raw request: status, headers, body length. */
const ask = (url: string, method: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; bytes: number }> =>
  new Promise((resolve, reject) => {
    request(url, { method, headers }, (res) => {
      let bytes = 0
      res.on('data', (d: Buffer) => (bytes += d.length))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes }))
    })
      .on('error', reject)
      .end()
  })

for (const kind of ['apache', 'lighttpd'] as OriginKind[]) {
  t.test(`${kind}: its Range, If-Range, HEAD and multi-range answers, and a node boots with it as its only origin`, gate('root', 'squashfs-tools', kind === 'apache' ? 'apache2' : 'lighttpd'), async (t) => {
    const s = await scratch(t)
    const www = join(s.dir, 'www')
    const tree = await makeOsTree(join(s.dir, 'tree'), { extraBytes: 3 * MiB })
    const img = await mksquashfs(tree, join(s.dir, 'os.sqfs'))
    // Apache serves as nobody: the scratch directory (mkdtemp, 0700) must be traversable.
    await chmod(s.dir, 0o755)
    await mkdir(www, { recursive: true })
    // publishStatic needs the URL first: the server starts on the empty root, which is then filled.
    const origin = await startOrigin(kind, www)
    t.teardown(() => origin.stop())
    const pub = await publishStatic({ root: www, server: origin.url, node: 'n9', image: img, name: 'os', style: 'rwram', partitions: { cache: null, root: null } })
    const imageUrl = `${origin.url}${pub.imageUrlPath}`

    // What the downloader meets from this server.
    const head = await ask(imageUrl, 'HEAD')
    t.equal(head.status, 200, 'HEAD answered')
    t.equal(Number(head.headers['content-length']), pub.size, 'HEAD gives the size')
    t.equal(head.headers['accept-ranges'], 'bytes', 'and says it takes ranges')
    t.equal(head.bytes, 0, 'no body')
    const one = await ask(imageUrl, 'GET', { range: 'bytes=100-4195' })
    t.equal(one.status, 206)
    t.equal(one.headers['content-range'], `bytes 100-4195/${pub.size}`, 'a single range as asked (what the downloader checks)')
    t.equal(one.bytes, 4096)
    const stale = await ask(imageUrl, 'GET', { range: 'bytes=100-199', 'if-range': '"not-this-one"' })
    t.equal(stale.status, 200, 'If-Range with another validator: the whole file')
    t.equal(stale.bytes, pub.size)
    const multi = await ask(imageUrl, 'GET', { range: 'bytes=0-9,20-29' })
    t.ok(multi.status === 206 || multi.status === 200, `several ranges: ${multi.status} ${String(multi.headers['content-type'])} (never asked for by the downloader: one range per request)`)

    // A node boots from it: descriptor, manifest and image bytes all from this server, two parallel range streams.
    const runDir = join(s.dir, 'run')
    const sysroot = join(s.dir, 'sysroot')
    t.teardown(async () => {
      await unmountUnder(runDir)
      await unmountUnder(sysroot)
    })
    const r = await runBootStage({
      cmdline: parseBootCmdline(`rd.bootagent.server=${origin.url} rd.bootagent.node=n9 rd.bootagent.cache=none rd.bootagent.root=none rd.bootagent.streams=2`),
      runDir,
      sysroot,
      pipeline: cachePipeline,
      log: silentLogger(),
      sleep: async () => {},
      mayReboot: false,
    })
    t.equal(r.exitCode, 0, r.record.error?.message ?? `booted from ${kind}`)
    t.match(r.record, { result: 'ok', style: 'rwram', image: { sha256: pub.sha256 }, cache: { hit: false, verifiedBy: 'download', inRam: true } })
    t.ok(r.record.bytesFetched >= pub.size, `the image came from ${kind} (${r.record.bytesFetched} bytes)`)
    t.same(await hashTree(sysroot), await hashTree(tree), 'the root is the image tree')
    t.match(JSON.parse(await readFile(join(sysroot, '.boot-agent-image'), 'utf8')), { sha256: pub.sha256 })
  })
}
