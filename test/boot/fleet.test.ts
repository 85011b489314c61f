/**
 * The boot stage at fleet scale (issue 20), on real parts: a real nginx as the
 * head's static files (test/helpers/static-head.ts), a second real nginx as
 * the group's mirror, real squashfs images, an rwram boot (no partitions).
 * What is checked is what reached the downloader: the node id (seeding mirror
 * order and jitter), the streams (parallel Range requests in nginx's access
 * log) and the descriptor's mirrors (bytes served by the mirror, not the head).
 */
import t from 'tap'
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { runBootStage, type ImagePipeline } from '../../agent/boot/stage.js'
import type { Cache } from '../../agent/cache/store.js'
import { silentLogger } from '../../agent/core/log.js'
import { gate } from '../helpers/capability.js'
import { makeOsTree, mksquashfs, scratch, unmountUnder } from '../helpers/loop.js'
import { startNginx } from '../helpers/nginx.js'
import { publishStatic } from '../helpers/static-head.js'

const realGate = gate('root', 'squashfs-tools', 'nginx')
const MiB = 1024 * 1024

const setup = async (t: Parameters<typeof scratch>[0]) => {
  const s = await scratch(t)
  const www = join(s.dir, 'www')
  const head = await startNginx(www)
  t.teardown(() => head.stop())
  const tree = await makeOsTree(join(s.dir, 'tree'), { extraBytes: 4 * MiB })
  const img = await mksquashfs(tree, join(s.dir, 'os.sqfs'))
  const pub = await publishStatic({ root: www, server: head.url, node: 'n7', image: img, name: 'os', style: 'rwram', partitions: { cache: null, root: null } })
  const runDir = join(s.dir, 'run')
  const sysroot = join(s.dir, 'sysroot')
  t.teardown(async () => {
    await unmountUnder(runDir)
    await unmountUnder(sysroot)
  })
  /** Rewrites the static descriptor with extra image fields and policies. */
  const descriptor = async (image: Record<string, unknown>, policies: Record<string, unknown>): Promise<void> => {
    const path = join(www, 'v1', 'nodes', 'n7', 'boot')
    const d = JSON.parse(await readFile(path, 'utf8')) as { image: Record<string, unknown>; policies: Record<string, unknown> }
    await writeFile(path, JSON.stringify({ ...d, image: { ...d.image, ...image }, policies: { ...d.policies, ...policies } }))
  }
  const seen: Array<{ node: string; streams: number; mirrors?: string[] }> = []
  const spy: ImagePipeline<Cache> = {
    ...cachePipeline,
    fetchImage: (o) => (seen.push({ node: o.node, streams: o.streams, ...(o.mirrors ? { mirrors: o.mirrors } : {}) }), cachePipeline.fetchImage(o)),
  }
  const boot = (extra = '') =>
    runBootStage({
      cmdline: parseBootCmdline(`rd.bootagent.server=${head.url} rd.bootagent.node=n7 rd.bootagent.cache=none rd.bootagent.root=none ${extra}`),
      runDir,
      sysroot,
      pipeline: spy,
      log: silentLogger(),
      sleep: async () => {},
      mayReboot: false,
    })
  return { s, www, head, pub, boot, seen, descriptor }
}

t.test('rd.bootagent.streams=4: the node id and the streams reach the download, which fetches in parallel ranges', realGate, async (t) => {
  const env = await setup(t)
  const r = await env.boot('rd.bootagent.streams=4')
  t.equal(r.exitCode, 0, r.record.error?.message ?? 'boot ok')
  t.match(env.seen, [{ node: 'n7', streams: 4 }], 'the stage hands its node id (not the host name) and the key to the downloader')
  const ranges = (await env.head.access()).filter((a) => a.path === env.pub.imageUrlPath)
  t.ok(ranges.length >= 4, `the image came in ${ranges.length} Range requests`)
  t.ok(ranges.every((a) => a.status === 206 && a.range.startsWith('bytes=')), 'each a 206 answer to a Range')
  t.equal(ranges.reduce((n, a) => n + a.bytes, 0), env.pub.size, 'together exactly the image')
  const connections = new Set(ranges.map((a) => a.connection))
  t.ok(connections.size >= 2, `over ${connections.size} connections at once (parallel streams, not one reused connection)`)
})

t.test('the descriptor\'s policies.streams applies when the command line says nothing; without either, one stream', realGate, async (t) => {
  const env = await setup(t)
  await env.descriptor({}, { streams: 3 })
  t.equal((await env.boot()).exitCode, 0)
  t.equal(env.seen.at(-1)?.streams, 3)
  await env.descriptor({}, { streams: null })
  t.equal((await env.boot()).exitCode, 0)
  t.equal(env.seen.at(-1)?.streams, 1, 'the default, DEFAULT_BOOT_STREAMS')
})

t.test('the descriptor\'s mirrors are tried first: a boot whose group mirror serves the image takes no image bytes from the head', realGate, async (t) => {
  const env = await setup(t)
  const rackRoot = join(env.s.dir, 'rack')
  const rackDir = join(rackRoot, 'v1', 'images', 'by-digest', env.pub.sha256)
  await mkdir(rackDir, { recursive: true })
  await copyFile(join(env.www, env.pub.imageUrlPath), join(rackDir, 'image'))
  const rack = await startNginx(rackRoot)
  t.teardown(() => rack.stop())
  await env.descriptor({ mirrors: [`${rack.url}${env.pub.imageUrlPath}`] }, {})
  const r = await env.boot()
  t.equal(r.exitCode, 0, r.record.error?.message ?? 'boot ok')
  t.same(env.seen.at(-1)?.mirrors, [`${rack.url}${env.pub.imageUrlPath}`])
  const fromRack = (await rack.access()).filter((a) => a.path === env.pub.imageUrlPath).reduce((n, a) => n + a.bytes, 0)
  const fromHead = (await env.head.access()).filter((a) => a.path === env.pub.imageUrlPath).reduce((n, a) => n + a.bytes, 0)
  t.equal(fromRack, env.pub.size, 'every image byte from the mirror')
  t.equal(fromHead, 0, 'none from the head (the manifest\'s urls stay the fallback)')
})
