import t from 'tap'
import { makeEvent } from '../../agent/protocol/event.js'
import { computeConsistency, type PublishedName } from '../../agent/head/consistency.js'
import { NodeStates } from '../../agent/head/node-state.js'

const A = 'a'.repeat(64)
const B = 'b'.repeat(64)
const C = 'c'.repeat(64)
const at = (s: number): Date => new Date(Date.UTC(2026, 10, 21, 12, 0, s))
const entry = (sha256: string, s: number) => ({ name: 'CPE-base', sha256, size: 10, arch: 'x86_64' as const, time: at(s).toISOString() })
const published = (drift: PublishedName['drift'] = []): PublishedName[] => [{ name: 'CPE-base', history: [entry(A, 0)], current: entry(A, 0), drift }]
const img = (sha256: string) => ({ image: { name: 'CPE-base', sha256 } })

t.test('all nodes on the published digest: consistent, every node mapped', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('boot', 'n1', { record: { result: 'ok', fallbacks: [] } }, { ...img(A), now: at(1) }))
  s.apply(makeEvent('status', 'n2', {}, { ...img(A), now: at(2) }))
  const v = computeConsistency(published(), s.all())
  t.same(v.inconsistent, [])
  t.match(v.images[0], { consistent: true, nodes: { n1: A, n2: A }, digests: [{ sha256: A, published: true, current: true, booted: ['n1'], running: ['n1', 'n2'] }] })
})

t.test('a node running a digest never published under the name is flagged (with mixed digests)', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('boot', 'n1', { record: { result: 'ok' } }, { ...img(A), now: at(1) }))
  s.apply(makeEvent('boot', 'n2', { record: { result: 'ok' } }, { ...img(C), now: at(1) }))
  const v = computeConsistency(published(), s.all())
  t.same(v.images[0]?.flags.map((f) => f.code).sort(), ['mixed-digests', 'unpublished-digest'])
  t.match(v.images[0]?.flags.find((f) => f.code === 'unpublished-digest'), { digests: [C], nodes: ['n2'] })
})

t.test('a whole-image integrity report names the digest actually served', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('integrity', 'n3', { algorithm: 'sha256', expected: A, found: B, url: 'http://h/x' }, { ...img(A), now: at(3) }))
  const v = computeConsistency(published(), s.all())
  t.match(v.images[0]?.flags, [{ code: 'served-bytes-differ', digests: [A, B], nodes: ['n3'] }])
  t.match(v.images[0]?.digests.find((d) => d.sha256 === B), { published: false, servedTo: ['n3'] })
})

t.test('last boot is the latest by event time, not by arrival; failures, fallbacks and squashfs errors are listed', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('boot', 'n1', { record: { result: 'ok', style: 'rwram', requestedStyle: 'disked', fallbacks: [{ kind: 'no-root', reason: '_disk_root missing' }] } }, { ...img(A), now: at(5) }))
  s.apply(makeEvent('boot-failed', 'n1', { error: { message: 'old failure' }, record: { result: 'failed' } }, { ...img(A), now: at(2) }))
  s.apply(makeEvent('boot-failed', 'n2', { error: { code: 'EINTEGRITY', message: 'bad chunk' }, record: { result: 'failed' } }, { ...img(A), now: at(4) }))
  s.apply(makeEvent('squashfs-error', 'n1', { count: 7, firstTime: at(6).toISOString() }, { ...img(A), now: at(7) }))
  s.apply(makeEvent('squashfs-error', 'n1', { count: 3 }, { ...img(A), now: at(8) }))
  t.match(s.get('n1')?.lastBoot, { result: 'ok', style: 'rwram' }, 'the late-arriving older failure did not replace the newer boot')
  const v = computeConsistency(published(), s.all())
  const i = v.images[0]
  t.match(i?.failedBoots, [{ node: 'n2', error: 'bad chunk', sha256: A }])
  t.match(i?.fallbacks, [{ node: 'n1', style: 'rwram', requestedStyle: 'disked', fallbacks: [{ kind: 'no-root' }] }])
  t.match(i?.squashfsErrors, [{ node: 'n1', count: 10, sha256: A }])
})

t.test('a store file changed in place is flagged, and named by what it holds now', async (t) => {
  const drift = [{ sha256: A, expected: { size: 10, mtimeMs: 1, ino: 5 }, found: { size: 10, mtimeMs: 2, ino: 5 }, nowSha256: B }]
  const v = computeConsistency(published(drift), [])
  t.match(v.images[0]?.flags, [{ code: 'store-object-modified', digests: [A, B] }])
  t.match(v.images[0]?.digests.find((d) => d.sha256 === B), { inStoreAs: [A] })
  const touched = computeConsistency(published([{ ...drift[0]!, nowSha256: A }]), [])
  t.same(touched.inconsistent, [], 'touched but same bytes is not a problem')
})

t.test('a boot that failed on EINTEGRITY counts as a served-bytes report; a node\'s own cache going bad does not', async (t) => {
  const s = new NodeStates()
  // The boot stage's form: record nested, error {code, message} only.
  s.apply(makeEvent('boot-failed', 'n5', { error: { code: 'EINTEGRITY', message: 'chunk 3 … failed sha256 check' }, action: 'reboot', record: { result: 'failed', style: 'disked', fallbacks: [] } }, { ...img(A), now: at(1) }))
  // The daemon's self-check of its cached copy: an integrity event about local bytes.
  s.apply(makeEvent('integrity', 'n6', { source: 'self-check', what: 'cache-object', badChunks: [{ index: 4, offset: 0, size: 1, expected: A }, { index: 9, offset: 0, size: 1, expected: A }], corruptChunks: [4, 9] }, { ...img(A), now: at(2) }))
  s.apply(makeEvent('boot', 'n6', { record: { result: 'ok', style: 'disked', fallbacks: [], cache: { hit: true } } }, { ...img(A), now: at(3) }))
  t.match(s.get('n6')?.lastBoot, { result: 'ok', style: 'disked', cacheHit: true }, 'nested boot record read')
  const v = computeConsistency(published(), s.all())
  const i = v.images[0]
  t.same(i?.integrityErrors.map((e) => e.node).sort(), ['n5', 'n6'])
  t.match(i?.flags, [{ code: 'served-bytes-differ', digests: [A], nodes: ['n5'] }])
  t.equal(i?.flags.length, 1)
})

t.test('a node named like an Object.prototype property is one node like any other', async (t) => {
  const s = new NodeStates()
  // Squashfs errors for the name, nothing known of what runs: no digest is invented for them.
  s.apply(makeEvent('squashfs-error', 'constructor', { count: 2 }, { image: { name: 'CPE-base' }, now: at(1) }))
  s.apply(makeEvent('squashfs-error', 'toString', { count: 1 }, { image: { name: 'CPE-base' }, now: at(1) }))
  s.apply(makeEvent('status', 'valueOf', {}, { ...img(A), now: at(2) }))
  const v = computeConsistency(published(), s.all())
  t.same(v.images[0]?.squashfsErrors, [
    { node: 'constructor', count: 2, last: at(1).toISOString() },
    { node: 'toString', count: 1, last: at(1).toISOString() },
  ])
  t.same(v.images[0]?.nodes, { valueOf: A })
  t.same(v.inconsistent, [])
})
