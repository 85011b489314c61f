/**
 * A node names itself (`X-Boot-Agent-Node`) on every request it makes to the
 * head: the descriptor, the manifest (node-fetch), the image bytes
 * (direct-http.ts) and the boot events (the Sender). What is checked is what
 * the real head saw: its own request log lines (debug), which carry the
 * header it read (head/server.ts, the same reading its Retry-After spreading
 * uses). A node id that is not known (the `fetch` command's host-name
 * fallback, the boot stage's `unknown`) or not a safe name is never sent.
 */
import t from 'tap'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { createLogger, silentLogger } from '../../agent/core/log.js'
import { Cache } from '../../agent/cache/store.js'
import { fetchImage, fetchManifest } from '../../agent/transport/fetch-image.js'
import { fetchDescriptor } from '../../agent/boot/descriptor.js'
import { Sender } from '../../agent/events/sender.js'
import { Spool } from '../../agent/events/spool.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { NODE_HEADER, UNKNOWN_NODE, nodeHeaders } from '../../agent/protocol/node-header.js'
import { imageBytes, publishBytes, sha256, writeNodes } from '../helpers/head-fixtures.js'
import { waitUntil } from '../helpers/wait.js'

const MiB = 1024 * 1024

interface RequestLine {
  method: string
  url: string
  node?: string
  status: number
}

t.test('nodeHeaders: a safe, known id only', async (t) => {
  t.same(nodeHeaders('n0042'), { [NODE_HEADER]: 'n0042' })
  t.same(nodeHeaders('aa:bb:cc:dd:ee:ff'), { [NODE_HEADER]: 'aa:bb:cc:dd:ee:ff' }, 'a MAC address (the last-resort id)')
  for (const bad of [undefined, '', UNKNOWN_NODE, 'n1\r\nx-injected: 1', 'two words', '../n1', 'x'.repeat(200)]) {
    t.same(nodeHeaders(bad), {}, `none for ${JSON.stringify(bad)}`)
  }
})

t.test('the head sees the node id on the descriptor, manifest, image and event requests; none when unknown or unsafe', async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const os = await publishBytes(store, 'os', imageBytes(3 * MiB, 7), { dir })
  const other = await publishBytes(store, 'other', imageBytes(2 * MiB, 8), { dir })
  const logPath = join(dir, 'head.log')
  const fd = openSync(logPath, 'w')
  const head = await startHead({
    store,
    nodes: await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'os' }, nodes: { n1: {} } }),
    log: createLogger({ fd, level: 'debug', format: 'json' }),
  })
  t.teardown(async () => {
    await head.close({ abort: true })
    closeSync(fd)
  })
  const lines = (): RequestLine[] =>
    readFileSync(logPath, 'utf8')
      .split('\n')
      .flatMap((l) => {
        try {
          const j = JSON.parse(l) as RequestLine & { msg?: string }
          return typeof j.url === 'string' ? [j] : []
        } catch {
          return []
        }
      })
  const manifestUrl = (sha: string) => `${head.url}/v1/images/by-digest/${sha}/manifest`
  const imagePath = (sha: string) => `/v1/images/by-digest/${sha}/image`

  // Node n1, as the boot stage makes its requests.
  await fetchDescriptor(head.url, 'n1', { timeoutMs: 10_000, log: silentLogger() })
  const m = await fetchManifest(manifestUrl(os.sha256), { nodeId: 'n1' })
  const r = await fetchImage({ manifest: m, cache: await Cache.open(join(dir, 'cache')), nodeId: 'n1', maxRangeBytes: MiB })
  t.equal(r.sha256, sha256(imageBytes(3 * MiB, 7)))
  const spool = new Spool(join(dir, 'spool'))
  await spool.append(makeEvent('cache', 'n1', { action: 'clear', reason: 'test', cleared: false }))
  await new Sender({ server: head.url, node: 'n1', spools: [spool] }).flushOnce(AbortSignal.timeout(10_000))

  // Without a known, safe id: the `fetch` command (host name fallback), an id that is not a name, the stage's placeholder.
  const m2 = await fetchManifest(manifestUrl(other.sha256))
  await fetchImage({ manifest: m2, cache: await Cache.open(join(dir, 'cache2')) })
  await fetchManifest(manifestUrl(other.sha256), { nodeId: 'n1\r\nx-injected: 1' })
  await fetchImage({ manifest: m2, cache: await Cache.open(join(dir, 'cache3')), nodeId: 'two words' })
  const spool2 = new Spool(join(dir, 'spool2'))
  await spool2.append(makeEvent('cache', UNKNOWN_NODE, { action: 'clear', reason: 'test', cleared: false }))
  await new Sender({ server: head.url, node: UNKNOWN_NODE, spools: [spool2] }).flushOnce(AbortSignal.timeout(10_000)).catch(() => undefined)

  // The head writes its log lines through pino's stream: wait for the last request's.
  const seen = await waitUntil('the head to log every request', async () => {
    const l = lines()
    return l.some((x) => x.url === `/v1/nodes/${UNKNOWN_NODE}/events`) && l
  })
  const of = (pred: (x: RequestLine) => boolean) => seen.filter(pred)
  const descriptor = of((x) => x.url.startsWith('/v1/nodes/n1/boot'))
  const osManifest = of((x) => x.url === new URL(manifestUrl(os.sha256)).pathname)
  const osImage = of((x) => x.url === imagePath(os.sha256))
  const events = of((x) => x.url === '/v1/nodes/n1/events')
  t.equal(descriptor.length, 1, 'one descriptor request')
  t.equal(osManifest.length, 1, 'one manifest request')
  t.ok(osImage.length >= 3, `the 3 MiB image in 1 MiB ranges (${osImage.length} requests)`)
  t.equal(events.length, 1, 'one events POST')
  for (const x of [...descriptor, ...osManifest, ...osImage, ...events]) t.equal(x.node, 'n1', `${x.method} ${x.url} came with the node's id`)

  const otherRequests = of((x) => x.url === new URL(manifestUrl(other.sha256)).pathname || x.url === imagePath(other.sha256))
  t.ok(otherRequests.length >= 4, `manifest and image requests without a usable id (${otherRequests.length})`)
  for (const x of otherRequests) t.equal(x.node, undefined, `${x.method} ${x.url}: no node id sent`)
  const unknown = of((x) => x.url === `/v1/nodes/${UNKNOWN_NODE}/events`)
  t.ok(unknown.length >= 1)
  for (const x of unknown) t.equal(x.node, undefined, 'the placeholder id is not sent as a node id')
  t.notMatch(readFileSync(logPath, 'utf8'), /x-injected/i, 'nothing of the unsafe id reached the head')
})
