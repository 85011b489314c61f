import t from 'tap'
import type { BootCmdline } from '../../agent/boot/cmdline.js'
import type { BootDescriptor } from '../../agent/boot/descriptor.js'
import {
  type Inventory,
  type PartitionState,
  CACHE_SLACK_BYTES,
  decideCacheFull,
  partitionKey,
  planBoot,
  planCacheFull,
  planRootFit,
  refuseRootOnCache,
  resolveIntent,
} from '../../agent/boot/plan.js'

const MiB = 1024 * 1024
const sha = 'a'.repeat(64)
const desc = (over: Partial<BootDescriptor> = {}): BootDescriptor => ({
  schema: 1,
  node: 'n1',
  style: 'disked',
  image: { name: 'img', sha256: sha, size: 100 * MiB, manifest: 'http://h/v1/images/img/manifest' },
  partitions: { cache: { kind: 'label', value: 'cwcache', text: 'LABEL=cwcache' }, root: { kind: 'label', value: 'cwroot', text: 'LABEL=cwroot' } },
  policies: {},
  ...over,
})
const mounted = (dev: string, mp: string, capacity = 1000 * MiB, free = 900 * MiB): PartitionState => ({
  state: 'mounted',
  device: dev,
  mountpoint: mp,
  fstype: 'ext4',
  capacityBytes: capacity,
  freeBytes: free,
})
const CACHE = mounted('/dev/vdb1', '/run/boot-agent/cache')
const ROOT = mounted('/dev/vdb2', '/run/boot-agent/root')
const MISSING: PartitionState = { state: 'missing', reason: 'no device within 10000 ms' }
const UNUSABLE: PartitionState = { state: 'unusable', device: '/dev/vdb2', reason: 'mount: wrong fs type' }
const intent = (cmd: BootCmdline = {}, d = desc()) => resolveIntent(cmd, d, 'n1', 'http://h')
const inv = (cache: PartitionState, root: PartitionState, extra: Partial<Inventory> = {}): Inventory => ({
  cache,
  root,
  ...(cache.state === 'mounted' ? { cacheContents: { hasImage: false, evictableBytes: 0 } } : {}),
  ...extra,
})

t.test('command-line values override the descriptor, which overrides the defaults', async (t) => {
  const i = intent({ style: 'roram', root: null, verify: 'strong' }, desc({ policies: { verify: 'fast', onfail: 'reboot' } }))
  t.equal(i.requestedStyle, 'roram')
  t.equal(i.styleSource, 'cmdline')
  t.equal(i.rootSpec, null, 'root=none on the command line beats the descriptor')
  t.equal(i.cacheSpec?.text, 'LABEL=cwcache')
  t.equal(i.verify, 'strong')
  t.equal(i.onfail, 'reboot')
  t.equal(i.cacheFull, 'ram', 'default cache-full policy is RAM')
  const d = intent({}, desc({ style: undefined }))
  t.equal(d.requestedStyle, 'disked')
  t.equal(d.styleSource, 'default')
  t.equal(d.onfail, 'emergency')
})

t.test('disked with both partitions mounted: disked, cache on disk, no fallback', async (t) => {
  const p = planBoot(intent(), inv(CACHE, ROOT))
  t.equal(p.style, 'disked')
  t.match(p.cache, { mode: 'partition', device: '/dev/vdb1', spec: 'LABEL=cwcache' })
  t.match(p.root, { mode: 'partition', device: '/dev/vdb2' })
  t.same(p.fallbacks, [])
  t.equal(p.action, 'boot')
})

t.test('cache missing → disked without a cache, with the reason', async (t) => {
  const p = planBoot(intent(), inv(MISSING, ROOT))
  t.equal(p.style, 'disked')
  t.equal(p.cache.mode, 'ram')
  t.equal(p.fallbacks.length, 1)
  t.equal(p.fallbacks[0]?.kind, 'cache-missing')
  t.match(p.fallbacks[0]?.reason, /LABEL=cwcache not found: no device within 10000 ms; booting without a cache/)
})

t.test('cache that will not mount → cache-unusable fallback', async (t) => {
  const p = planBoot(intent(), inv({ state: 'unusable', device: '/dev/vdb1', reason: 'bad superblock' }, ROOT))
  t.same(p.fallbacks.map((f) => f.kind), ['cache-unusable'])
  t.match(p.fallbacks[0]?.reason, /bad superblock/)
})

t.test('disked with no cache configured is still a reported fallback', async (t) => {
  const p = planBoot(intent({ cache: null }), inv({ state: 'unset' }, ROOT))
  t.same(p.fallbacks.map((f) => f.kind), ['cache-missing'])
  t.match(p.fallbacks[0]?.reason, /no cache partition configured/)
})

t.test('root missing → rwram, cache still used', async (t) => {
  const p = planBoot(intent(), inv(CACHE, MISSING))
  t.equal(p.style, 'rwram')
  t.equal(p.requestedStyle, 'disked')
  t.same(p.root, { mode: 'tmpfs' })
  t.equal(p.cache.mode, 'partition')
  t.same(p.fallbacks.map((f) => f.kind), ['root-missing'])
  t.match(p.fallbacks[0]?.reason, /booting rwram instead of disked/)
})

t.test('root missing with ramstyle=roram → roram with an overlay', async (t) => {
  const p = planBoot(intent({ ramStyle: 'roram' }), inv(CACHE, UNUSABLE))
  t.equal(p.style, 'roram')
  t.same(p.root, { mode: 'overlay' })
  t.same(p.fallbacks.map((f) => f.kind), ['root-unusable'])
})

t.test('both missing → rwram without a cache, two fallbacks', async (t) => {
  const p = planBoot(intent(), inv(MISSING, MISSING))
  t.equal(p.style, 'rwram')
  t.equal(p.cache.mode, 'ram')
  t.same(p.fallbacks.map((f) => f.kind), ['cache-missing', 'root-missing'])
})

t.test('rwram and roram ignore the root partition and need no cache', async (t) => {
  for (const style of ['rwram', 'roram'] as const) {
    const p = planBoot(intent({ style, cache: null }), inv({ state: 'unset' }, { state: 'unset' }))
    t.equal(p.style, style)
    t.same(p.fallbacks, [], `${style}: nothing to fall back from`)
    t.same(p.root, style === 'roram' ? { mode: 'overlay' } : { mode: 'tmpfs' })
  }
  const p = planBoot(intent({ style: 'rwram' }), inv(MISSING, { state: 'unset' }))
  t.same(p.fallbacks.map((f) => f.kind), ['cache-missing'], 'a configured cache that is missing is reported for RAM styles too')
})

t.test('cache too small even after eviction, policy ram → image in RAM, disked goes on', async (t) => {
  const small = mounted('/dev/vdb1', '/c', 200 * MiB, 50 * MiB)
  const p = planBoot(intent(), inv(small, ROOT, { cacheContents: { hasImage: false, evictableBytes: 40 * MiB } }))
  t.equal(p.action, 'boot')
  t.equal(p.style, 'disked')
  t.match(p.cache, { mode: 'ram', device: '/dev/vdb1' })
  t.same(p.fallbacks.map((f) => f.kind), ['cache-full'])
  t.match(p.fallbacks[0]?.reason, /policy ram/)
})

t.test('cache too small, policy clear-reboot and clearing would help → clear the cache and reboot', async (t) => {
  const small = mounted('/dev/vdb1', '/c', 200 * MiB, 50 * MiB)
  const p = planBoot(intent({ cacheFull: 'clear-reboot' }), inv(small, ROOT))
  t.equal(p.action, 'clear-cache-reboot')
  t.match(p.actionReason, /clearing the cache and rebooting/)
  t.same(p.fallbacks.map((f) => f.kind), ['cache-full'])
})

t.test('cache smaller than the image, policy clear-reboot → RAM boot instead of a reboot loop', async (t) => {
  const tiny = mounted('/dev/vdb1', '/c', 50 * MiB, 50 * MiB)
  const p = planBoot(intent({ cacheFull: 'clear-reboot' }), inv(tiny, ROOT))
  t.equal(p.action, 'boot')
  t.equal(p.cache.mode, 'ram')
  t.match(p.fallbacks[0]?.reason, /reboot in a loop/)
})

t.test('eviction room counts: fits after eviction → no fallback; image already cached → no size check', async (t) => {
  const small = mounted('/dev/vdb1', '/c', 200 * MiB, 50 * MiB)
  const fits = planBoot(intent(), inv(small, ROOT, { cacheContents: { hasImage: false, evictableBytes: 60 * MiB } }))
  t.same(fits.fallbacks, [])
  const hit = planBoot(intent(), inv(mounted('/dev/vdb1', '/c', 200 * MiB, 0), ROOT, { cacheContents: { hasImage: true, evictableBytes: 0 } }))
  t.same(hit.fallbacks, [])
  t.equal(hit.cache.mode, 'partition')
  const edge = mounted('/dev/vdb1', '/c', 200 * MiB, 100 * MiB + CACHE_SLACK_BYTES)
  t.same(planBoot(intent(), inv(edge, ROOT)).fallbacks, [], 'exactly enough room is enough')
})

t.test('a cache that fills during the download is decided by the same policy', async (t) => {
  const base = planBoot(intent(), inv(CACHE, ROOT))
  const ram = planCacheFull(base, { needed: 100 * MiB, available: 10 * MiB, capacityBytes: 1000 * MiB })
  t.equal(ram.cache.mode, 'ram')
  t.equal(ram.action, 'boot')
  const cr = planCacheFull(planBoot(intent({ cacheFull: 'clear-reboot' }), inv(CACHE, ROOT)), {
    needed: 100 * MiB,
    available: 10 * MiB,
    capacityBytes: 1000 * MiB,
  })
  t.equal(cr.action, 'clear-cache-reboot')
  t.same(decideCacheFull('clear-reboot', { needed: 2, available: 1, capacityBytes: 1 }).action, 'ram')
})

t.test('root too small for the unpacked image → ram style before anything is wiped', async (t) => {
  const p = planBoot(intent(), inv(CACHE, ROOT))
  const ok = planRootFit(p, { neededBytes: 500 * MiB, capacityBytes: 1000 * MiB })
  t.equal(ok, p, 'fits: plan unchanged')
  const small = planRootFit(p, { neededBytes: 995 * MiB, capacityBytes: 1000 * MiB })
  t.equal(small.style, 'rwram')
  t.same(small.root, { mode: 'tmpfs' })
  t.same(small.fallbacks.map((f) => f.kind), ['root-too-small'])
  t.match(small.fallbacks[0]?.reason, /root left untouched/)
  const ro = planRootFit(planBoot(intent({ ramStyle: 'roram' }), inv(CACHE, ROOT)), { neededBytes: 2000 * MiB, capacityBytes: 1000 * MiB })
  t.equal(ro.style, 'roram')
  const ram = planBoot(intent({ style: 'rwram' }), inv(CACHE, ROOT))
  t.equal(planRootFit(ram, { neededBytes: 1e12, capacityBytes: 1 }), ram, 'RAM styles have no root partition to check')
})

t.test('refuseRootOnCache: one device under two names is refused naming both specs and the device; two devices pass', async (t) => {
  const cache = { spec: 'LABEL=cache', key: 'partitions.cache (boot descriptor)', device: '/dev/sdb1', devnum: '8:17' }
  t.equal(refuseRootOnCache(cache, { spec: 'LABEL=root', key: 'rd.bootagent.root', device: '/dev/sdb2', devnum: '8:18' }), undefined)
  t.equal(refuseRootOnCache(cache, undefined), undefined, 'no root configured or found')
  const e = refuseRootOnCache(cache, { spec: 'UUID=1234', key: 'rd.bootagent.root', device: '/dev/sdb1', devnum: '8:17' })
  t.match(e, { code: 'ECONFIG', key: 'rd.bootagent.root', context: { root: 'UUID=1234', cache: 'LABEL=cache', device: '/dev/sdb1', devnum: '8:17' } })
  t.match(e?.message, /^rd\.bootagent\.root: root partition UUID=1234 and cache partition LABEL=cache \(partitions\.cache \(boot descriptor\)\) are the same device \/dev\/sdb1 \(8:17\)/)
  t.ok(refuseRootOnCache({ ...cache, devnum: undefined }, { spec: '/dev/sdb1', key: 'k', device: '/dev/sdb1' }), 'without major:minor the real paths are compared')
  t.equal(partitionKey('root', { root: undefined }), 'partitions.root (boot descriptor)')
  t.equal(partitionKey('cache', { cache: null }), 'rd.bootagent.cache', 'rd.bootagent.cache=none is the command line too')
})
