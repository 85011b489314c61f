import t from 'tap'
import { makeEvent } from '../../agent/protocol/event.js'
import { MAX_KEPT_REPORTS, NodeStates, runningImage } from '../../agent/head/node-state.js'

const A = 'a'.repeat(64)
const B = 'b'.repeat(64)
const at = (s: number): Date => new Date(Date.UTC(2026, 10, 21, 12, 0, s))
const img = (sha256: string, name = 'CPE-base') => ({ image: { name, sha256 } })

t.test('a node is known from its first event; every event counts and lastEventAt is the latest event time', async (t) => {
  const s = new NodeStates()
  t.equal(s.get('n1'), undefined)
  s.apply(makeEvent('status', 'n1', {}, { now: at(10) }))
  s.apply(makeEvent('status', 'n1', {}, { now: at(3) }))
  s.apply(makeEvent('status', 'n2', {}, { now: at(1) }))
  t.match(s.get('n1'), { node: 'n1', events: 2, lastEventAt: at(10).toISOString(), integrity: [], integrityCount: 0, lost: 0 })
  t.same(s.all().map((v) => v.node).sort(), ['n1', 'n2'])
})

t.test('the last status is the latest by its own time, with the image it names', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('status', 'n1', {}, { ...img(B), now: at(5) }))
  s.apply(makeEvent('status', 'n1', {}, { ...img(A), now: at(2) }))
  t.match(s.get('n1')?.lastStatus, { time: at(5).toISOString(), image: { sha256: B } })
})

t.test('an image name or digest that is not valid is dropped, not kept', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('status', 'n1', {}, { image: { name: '../etc', sha256: 'XYZ' }, now: at(1) }))
  t.equal(s.get('n1')?.lastStatus?.image, undefined)
  s.apply(makeEvent('status', 'n1', {}, { image: { name: 'ok-name', sha256: 'nothex' }, now: at(2) }))
  t.same(s.get('n1')?.lastStatus?.image, { name: 'ok-name' })
})

t.test('the boot\'s image falls back to the nested record\'s image when the envelope has none', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('boot', 'n1', { record: { result: 'ok', image: { name: 'CPE-base', sha256: A }, bytesFetched: 42 } }, { now: at(1) }))
  t.match(s.get('n1')?.lastBoot, { result: 'ok', image: { name: 'CPE-base', sha256: A }, bytesFetched: 42, fallbacks: [] })
})

t.test('a boot event whose record says failed is a failed boot, with the error message kept', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('boot', 'n1', { record: { result: 'failed', error: { code: 'ENOSPC', message: 'disk full' } } }, { ...img(A), now: at(1) }))
  t.match(s.get('n1')?.lastBoot, { result: 'failed', error: 'disk full' })
  t.equal(s.get('n1')?.integrityCount, 0, 'only EINTEGRITY failures are integrity reports')
})

t.test('integrity reports are kept in time order, capped, and counted in full', async (t) => {
  const s = new NodeStates()
  const n = MAX_KEPT_REPORTS + 5
  for (let i = n - 1; i >= 0; i--) s.apply(makeEvent('integrity', 'n1', { algorithm: 'sha256', expected: A, found: B, chunk: i }, { ...img(A), now: at(i) }))
  const v = s.get('n1')!
  t.equal(v.integrityCount, n)
  t.equal(v.integrity.length, MAX_KEPT_REPORTS)
  t.same(v.integrity.map((r) => r.chunk), Array.from({ length: MAX_KEPT_REPORTS }, (_, i) => i + 5), 'the newest kept, oldest first')
  t.match(v.integrity[0], { download: true, expected: A, found: B, algorithm: 'sha256', image: { sha256: A } })
})

t.test('an integrity report with neither url nor chunk is about local bytes, not a download', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('integrity', 'n1', { expected: A, found: B }, { now: at(1) }))
  t.equal(s.get('n1')?.integrity[0]?.download, false)
})

t.test('io errors are tallied like squashfs errors: counts summed, earliest first time, image of the latest', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('io-error', 'n1', { count: 2, firstTime: at(1).toISOString() }, { ...img(A), now: at(4) }))
  s.apply(makeEvent('io-error', 'n1', {}, { ...img(B), now: at(9) }))
  s.apply(makeEvent('io-error', 'n1', { count: 0 }, { ...img(A), now: at(6) }))
  t.same(s.get('n1')?.ioErrors, { count: 4, first: at(1).toISOString(), last: at(9).toISOString(), image: { name: 'CPE-base', sha256: B } })
  t.same(s.get('n1')?.squashfsErrors, { count: 0 })
})

t.test('lost events add up; a negative or fractional count adds no more than its whole part', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('lost', 'n1', { count: 3 }, { now: at(1) }))
  s.apply(makeEvent('lost', 'n1', { count: 2.7 }, { now: at(2) }))
  s.apply(makeEvent('lost', 'n1', { count: -5 }, { now: at(3) }))
  t.equal(s.get('n1')?.lost, 5)
})

t.test('the last fallback is the latest by time', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('fallback', 'n1', { kind: 'no-root', reason: 'new' }, { now: at(5) }))
  s.apply(makeEvent('fallback', 'n1', { kind: 'no-cache', reason: 'old' }, { now: at(1) }))
  t.match(s.get('n1')?.lastFallback, { time: at(5).toISOString(), data: { kind: 'no-root' } })
})

t.test('runningImage: the later of the last status and the last good boot, saying which', async (t) => {
  const s = new NodeStates()
  s.apply(makeEvent('boot', 'n1', { record: { result: 'ok' } }, { ...img(A), now: at(5) }))
  t.match(runningImage(s.get('n1')!), { sha256: A, source: 'boot', time: at(5).toISOString() })
  s.apply(makeEvent('status', 'n1', {}, { ...img(B), now: at(7) }))
  t.match(runningImage(s.get('n1')!), { sha256: B, source: 'status' })
  s.apply(makeEvent('boot', 'n2', { record: { result: 'ok' } }, { ...img(A), now: at(9) }))
  s.apply(makeEvent('status', 'n2', {}, { ...img(B), now: at(3) }))
  t.match(runningImage(s.get('n2')!), { sha256: A, source: 'boot' }, 'an older status does not hide a newer boot')
  s.apply(makeEvent('boot-failed', 'n3', { error: { message: 'x' }, record: { result: 'failed' } }, { ...img(A), now: at(1) }))
  t.equal(runningImage(s.get('n3')!), undefined, 'a failed boot runs nothing')
})
