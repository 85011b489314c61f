/**
 * The boot stage's view of the cache (agent/cache) and the verified download
 * (agent/transport): the {@link ImagePipeline} the stage runs against.
 *
 * Both are imported when first used, not at the top: the boot command's
 * start-up (`timings.startup`) should not pay for the downloader (node-fetch)
 * and the cache's hashing before it has asked the head node anything.
 */
import { machineArch } from '../manifest/arch.js'
import { lstat, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Cache, FastDigest } from '../cache/store.js'
import type { ImagePipeline } from './stage.js'
import { seededRandom } from '../transport/mirrors.js'

const store = () => import('../cache/store.js')
const transport = () => import('../transport/fetch-image.js')

export const cachePipeline: ImagePipeline<Cache> = {
  warmUp(verify) {
    // The re-verification's workers (one per core: the fast digest runs off this thread,
    // strong verification's sha256 on workers) start while the descriptor is asked for and
    // the partitions mounted, not when the hashing starts.
    import('../hash/file.js')
      .then((h) => h.prewarmVerifyWorkers(verify))
      .catch(() => undefined) // only a head start: the hashing starts its own workers if need be
  },

  async release() {
    // Parked workers would otherwise be torn down at the process exit (~8 ms more there);
    // ending them now overlaps the unpack.
    await (await import('../hash/file.js')).endIdleVerifyWorkers()
  },

  openCache: async (dir, log) => (await store()).Cache.open(dir, { log }),

  async contents(cache, sha256) {
    const hasImage = await lstat(cache.objectPath(sha256)).then(
      (s) => s.isFile(),
      () => false,
    )
    const { objects } = await cache.list()
    // The previous image is the most recently used other object; eviction keeps it (SPEC §5).
    const others = objects.filter((o) => o.sha256 !== sha256).sort((a, b) => Date.parse(b.meta.lastUsedAt) - Date.parse(a.meta.lastUsedAt))
    const previous = others[0]?.sha256
    const evictableBytes = others.slice(1).reduce((n, o) => n + o.meta.size, 0)
    return { hasImage, evictableBytes, ...(previous ? { previous } : {}) }
  },

  async startFastDigest(cache, sha256, signal) {
    // Only a regular file the cache could have written is read (no symlink is followed).
    if (!(await lstat(cache.objectPath(sha256)).then((s) => s.isFile(), () => false))) return undefined
    // A sealed object is checked by the kernel's measurement, without reading it (cache/seal.ts): nothing to start.
    if ((await cache.measure(sha256)).sealed) return undefined
    // On workers only: this thread lists the cache and fetches the manifest meanwhile
    // (hashing here would hold each of those steps up for a whole segment at a time).
    const digest: Promise<FastDigest> = cache.fastDigest(sha256, { signal, offThread: true })
    digest.catch(() => undefined) // handed to fetchImage, or stopped unread
    return { digest }
  },

  async clear(cache) {
    const { objects } = await cache.list()
    for (const o of objects) await cache.remove(o.sha256)
    for (const f of await readdir(cache.tmpDir).catch(() => [])) await rm(join(cache.tmpDir, f), { recursive: true, force: true })
  },

  fetchManifest: async (url, opts) =>
    (await transport()).fetchManifest(url, {
      log: opts.log,
      headersTimeoutMs: opts.timeoutMs,
      pinned: opts.pinned,
      // An image for another architecture is refused before a byte of it is fetched (issue #21).
      arch: machineArch(),
      random: seededRandom(`${opts.node}:manifest`),
      nodeId: opts.node,
      ...(opts.publicKey ? { publicKey: opts.publicKey } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.bearer ? { bearer: opts.bearer } : {}),
    }),

  async fetchImage(opts) {
    const r = await (await transport()).fetchImage({
      manifest: opts.manifest,
      cache: opts.cache,
      log: opts.log,
      pin: opts.pin,
      verify: opts.verify,
      recordLater: true,
      nodeId: opts.node,
      streams: opts.streams,
      ...(opts.mirrors ? { mirrors: opts.mirrors } : {}),
      ...(opts.digest ? { digest: opts.digest } : {}),
      ...(opts.bearer ? { bearer: opts.bearer } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    })
    return { path: r.path, sha256: r.sha256, size: r.size, hit: r.hit, verifiedBy: r.verifiedBy, bytesDownloaded: r.bytesDownloaded, bytesReused: r.bytesReused, chunksRepaired: r.chunksRepaired, ...(r.recorded ? { recorded: r.recorded } : {}), ...(r.sealed ? { sealed: r.sealed } : {}), ...(r.readBecause ? { readBecause: r.readBecause } : {}) }
  },
}
