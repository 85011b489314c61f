import t from 'tap'
import { EVENT_KINDS, makeEvent, type EventKind } from '../../agent/protocol/event.js'
import { PAYLOAD_FIELDS, type EventPayloads } from '../../agent/protocol/payloads.js'
import { fieldPaths } from '../../agent/protocol/fields.js'
import { parseEvent, parseEventJson, parseEventsAnswer } from '../../agent/protocol/parse.js'
import { bootEvents, type BootRecord } from '../../agent/boot/handoff.js'
import { Coalescer } from '../../agent/events/coalesce.js'

const SHA = 'a'.repeat(64)
const seqs: Array<[number, number]> = [[3, 4]]
const bad = { index: 1, offset: 65536, size: 65536, expected: 'b'.repeat(64) }

/** One payload per kind with every documented field set, as the node sends it. */
const SAMPLES: { [K in EventKind]: EventPayloads[K] } = {
  boot: {
    record: {
      schema: 1, node: 'n1', server: 'http://head:8080', style: 'disked', requestedStyle: 'disked',
      fallbacks: [{ kind: 'cache-missing', reason: 'no cache partition' }],
      image: { name: 'CPE-base', sha256: SHA, size: 4096 },
      cache: { spec: 'LABEL=cwcache', device: '/dev/sda1', mountpoint: '/run/cache', hit: true, verifiedBy: 'manifest-xxh64', objectPath: '/run/cache/o', inRam: false },
      root: { spec: 'LABEL=cwroot', device: '/dev/sda2', sysroot: '/sysroot', init: '/sbin/init', mode: 'overlay', mountpoint: '/run/boot-agent/mnt/root', lower: '/run/boot-agent/mnt/overlay-lower', upper: '/run/boot-agent/mnt/root/.boot-agent/upper-20261207T190000Z-0a1b2c3d', trash: '/run/boot-agent/mnt/root/.boot-agent/trash', trashed: 2 },
      bytesFetched: 0, timings: { fetch: 12.5 }, result: 'ok', action: 'reboot', error: { code: 'EX', message: 'x' },
      spoolDir: '/run/cache/spool', time: '2026-11-21T13:00:00.000Z',
    },
    error: { code: 'EX', message: 'x' },
    action: 'reboot',
  },
  'boot-failed': {
    record: { result: 'failed', error: { code: 'EINTEGRITY', message: 'bad chunk' }, action: 'reboot' },
    error: { code: 'EINTEGRITY', message: 'bad chunk' },
    action: 'reboot',
  },
  fallback: { kind: 'root-missing', reason: 'no root', requestedStyle: 'disked', style: null },
  integrity: {
    algorithm: 'sha256', expected: SHA, found: 'c'.repeat(64), url: 'http://head/x', chunk: 3, what: 'chunk 3 failed',
    object: '/c/o', chunksRepaired: 1, bytesFetched: 65536, source: 'self-check', objectPath: '/c/o', chunksChecked: 9,
    badChunks: [bad], corruptChunks: [1], durationMs: 40, reason: 'chunks differ', action: 'marked-corrupt', repair: 'next fetch',
  },
  cache: {
    action: 'verified', reason: 'cache full', cleared: true, error: 'EIO', source: 'self-check', what: 'cache-object', objectPath: '/c/o',
    chunksChecked: 9, badChunks: [bad], corruptChunks: [], durationMs: 40,
  },
  'squashfs-error': {
    class: 'decompression-failed', device: 'loop0', message: 'SQUASHFS error: xz decompression failed', source: 'squashfs',
    rule: 'single-squashfs-loop', unattributed: 'logged before loop0 was bound to its file', backingFile: '/c/o', object: { sha256: SHA, path: '/c/o' }, role: 'image',
    candidates: [{ device: 'loop0', object: SHA }], compressor: 'xz', errno: -5, subsystem: 'block', count: 2,
    firstTime: '2026-11-21T13:00:00.000Z', lastTime: '2026-11-21T13:00:01.000Z', kmsg: { bootId: 'b', firstSeq: 3, lastSeq: 4, seqs },
    blocks: [{ offset: 4096, size: 512 }], blocksNotListed: 0,
  },
  'io-error': { class: 'ext4-error', device: 'sda2', message: 'EXT4-fs error', count: 1, kmsg: { bootId: 'b', firstSeq: 7, lastSeq: 7, seqs: [[7, 7]] } },
  status: {
    hostname: 'n1', arch: 'x86_64', kernel: '6.1', distro: 'Debian 12', uptimeS: 60,
    cpus: { brand: 'x', cores: 2, physicalCores: 1 }, memory: { totalBytes: 1024, availableBytes: 512 },
    disks: [{ fs: '/dev/sda1', type: 'ext4', mount: '/', sizeBytes: 10, usedBytes: 5 }],
    cache: [{ dir: '/c', objects: 1, bytes: 10, corruptObjects: 0, fsBytes: 100, fsFreeBytes: 50 }],
    running: { name: 'CPE-base', sha256: SHA }, style: 'disked', requestedStyle: 'disked',
    fallbacks: [{ kind: 'cache-missing', reason: 'x' }], bootResult: 'ok', daemon: { pid: 1 }, probeErrors: ['cpu: timeout'],
  },
  lost: { source: 'kmsg', count: 3, spool: '/s', totalLost: 3, fromSeq: 1, toSeq: 3, reason: 'overrun', kmsg: { bootId: 'b', firstSeq: 1, lastSeq: 3, seqs: [[1, 3]] } },
}

/** The values at a documented path (`a.b`, `a[].b`) in `o`, with the concrete path of each (`a.b`, `a[0].b`). */
const at = (o: unknown, path: string): Array<[string, unknown]> => {
  let found: Array<[string, unknown]> = [['', o]]
  for (const part of path.split('.')) {
    const isArray = part.endsWith('[]')
    const key = isArray ? part.slice(0, -2) : part
    found = found.flatMap(([p, v]) => {
      const x = (v as Record<string, unknown> | undefined)?.[key]
      const here = p ? `${p}.${key}` : key
      if (x === undefined) return []
      if (!isArray) return [[here, x] as [string, unknown]]
      return (x as unknown[]).slice(0, 1).map((e, i) => [`${here}[${i}]`, e] as [string, unknown])
    })
  }
  return found
}

/** Puts `value` at a concrete path (`a.b[0].c`) of a deep copy of `o`. */
const withValue = (o: unknown, path: string, value: unknown): unknown => {
  const copy = JSON.parse(JSON.stringify(o)) as Record<string, unknown>
  const parts = path.split(/\.|(?=\[)/).map((p) => (p.startsWith('[') ? Number(p.slice(1, -1)) : p))
  let cur = copy as Record<string | number, unknown>
  for (const p of parts.slice(0, -1)) cur = cur[p] as Record<string | number, unknown>
  cur[parts[parts.length - 1] as string | number] = value
  return copy
}

t.test('every kind is accepted in its documented shape, every documented field set', async (t) => {
  for (const kind of EVENT_KINDS) {
    const e = makeEvent(kind, 'n1', SAMPLES[kind] as never, { image: { name: 'CPE-base', sha256: SHA } })
    const r = parseEvent(JSON.parse(JSON.stringify(e)), { node: 'n1' })
    t.same(r, { ok: true, event: e }, `${kind} accepted as sent`)
    if (kind === 'boot-failed' || kind === 'io-error') continue // share their table with boot / squashfs-error, whose samples set every field
    const missing = fieldPaths(PAYLOAD_FIELDS[kind]).filter((p) => at(SAMPLES[kind], p).length === 0)
    t.same(missing, [], `${kind}: the sample sets every documented field`)
  }
})

t.test('each malformed payload field is refused by name', async (t) => {
  for (const kind of EVENT_KINDS) {
    for (const path of fieldPaths(PAYLOAD_FIELDS[kind])) {
      for (const [concrete, v] of at(SAMPLES[kind], path)) {
        // `true` is of no type but boolean; a boolean field gets a string.
        const wrong = typeof v === 'boolean' ? 'yes' : true
        const e = { ...makeEvent(kind, 'n1', withValue(SAMPLES[kind], concrete, wrong) as never) }
        const r = parseEvent(e, { node: 'n1' })
        t.match(r, { ok: false, field: `data.${concrete}` }, `${kind}: data.${concrete}`)
      }
    }
  }
})

t.test('envelope fields are refused by name, the head\'s messages kept', async (t) => {
  const ok = makeEvent('status', 'n1', {})
  const cases: Array<[unknown, string, RegExp]> = [
    [1, '', /must be an object/],
    [{ ...ok, extra: 1 }, 'extra', /unknown field/],
    [{ ...ok, id: 'a/b' }, 'id', /1-128 characters/],
    [{ ...ok, kind: 'reboot-now' }, 'kind', /must be one of boot, boot-failed, .* \(got "reboot-now"\)/],
    [{ ...ok, node: 'n2' }, 'node', /is "n2" but the batch was posted for node "n1"/],
    [{ ...ok, time: 'yesterday' }, 'time', /ISO-8601/],
    [{ ...ok, image: 'x' }, 'image', /must be an object/],
    [{ ...ok, image: { tag: 'x' } }, 'image.tag', /unknown field/],
    [{ ...ok, image: { name: '../x' } }, 'image.name', /not a valid image name/],
    [{ ...ok, image: { sha256: 'ABC' } }, 'image.sha256', /64 lower-case hex/],
    [{ ...ok, data: [] }, 'data', /must be an object/],
    [makeEvent('lost', 'n1', { kmsg: { seqs: [[1, 2, 3]] as never } }), 'data.kmsg.seqs[0]', /pair/],
  ]
  for (const [e, field, problem] of cases) t.match(parseEvent(e, { node: 'n1' }), { ok: false, field, problem }, field || '(the event)')
})

t.test('an unknown kind is refused', async (t) => {
  t.match(parseEvent({ ...makeEvent('status', 'n1', {}), kind: 'reboot-now' }), { ok: false, field: 'kind' })
  t.match(parseEventJson('{not json'), { ok: false, field: '', problem: 'is not JSON' })
})

t.test('a node not named is not checked against one (the spool reads its own events)', async (t) => {
  t.match(parseEvent(makeEvent('status', 'n9', {})), { ok: true })
  t.match(parseEvent({ ...makeEvent('status', 'n9', {}), node: 7 }), { ok: false, field: 'node' })
})

t.test('fields the table does not name are kept as they are', async (t) => {
  const e = { ...makeEvent('status', 'n1', {}), data: { vendorField: { any: 'thing' } } }
  t.same(parseEvent(e), { ok: true, event: e })
})

t.test('a flat boot record (protocol v1\'s other form) is read as data.record; its bad fields are named where they were sent', async (t) => {
  const flat = { ...makeEvent('boot', 'n1', { record: {} }), data: { result: 'ok', style: 'rwram', fallbacks: [], cache: { hit: true } } }
  const r = parseEvent(flat)
  t.ok(r.ok)
  if (r.ok) t.same(r.event.data, { record: { result: 'ok', style: 'rwram', fallbacks: [], cache: { hit: true } } })
  const failed = { ...makeEvent('boot-failed', 'n1', { record: {} }), data: { error: { code: 'EINTEGRITY', message: 'x' }, action: 'reboot' } }
  const f = parseEvent(failed)
  if (f.ok) t.same(f.event.data, { record: { error: { code: 'EINTEGRITY', message: 'x' }, action: 'reboot' }, error: { code: 'EINTEGRITY', message: 'x' }, action: 'reboot' })
  else t.fail('flat boot-failed refused')
  t.match(parseEvent({ ...flat, data: { result: 'maybe' } }), { ok: false, field: 'data.result', problem: 'must be "ok" or "failed"' })
  t.match(parseEvent({ ...flat, data: { fallbacks: 'none' } }), { ok: false, field: 'data.fallbacks', problem: 'must be an array' })
  t.match(parseEvent({ ...flat, data: { record: 5 } }), { ok: false, field: 'data.record', problem: 'must be an object' })
  const nested = makeEvent('boot', 'n1', { record: { result: 'ok' } })
  const n = parseEvent(nested)
  t.ok(n.ok && n.event === nested, 'the nested form is returned as it came')
})

t.test('the head\'s answer reads as counts; anything else as 0', async (t) => {
  t.same(parseEventsAnswer('{"accepted": 3, "duplicates": 1}'), { accepted: 3, duplicates: 1 })
  t.same(parseEventsAnswer('{"accepted": "3", "duplicates": 1.5}'), { accepted: 0, duplicates: 0 })
  t.same(parseEventsAnswer('not json'), { accepted: 0, duplicates: 0 })
})

t.test('makeEvent takes only the payload of its kind (tsc checks it)', async (t) => {
  // @ts-expect-error an integrity payload is not a boot payload
  const wrong = makeEvent('boot', 'n1', { expected: SHA, found: SHA })
  // @ts-expect-error nor is a boot payload an integrity one
  const wrong2 = makeEvent('integrity', 'n1', { record: {} })
  t.ok(wrong && wrong2, 'at run time makeEvent does not look')
})

t.test("what the node's own code makes passes the parser unchanged (boot hand-off, kernel error coalescing)", async (t) => {
  const record: BootRecord = {
    schema: 1, node: 'n1', server: 'http://h', style: 'rwram', requestedStyle: 'disked', fallbacks: [{ kind: 'root-missing', reason: 'no root' }],
    image: { name: 'img', sha256: SHA, size: 10 }, cache: { spec: 'LABEL=c', hit: false, inRam: false }, root: { spec: 'LABEL=r' },
    bytesFetched: 10, timings: { total: 5 }, result: 'failed', action: 'emergency', error: { code: 'EUNPACK', message: 'x' }, spoolDir: '/x', time: '2026-01-01T00:00:00.000Z',
  }
  const c = new Coalescer()
  for (const seq of [1, 2, 5]) {
    c.add({ kind: 'squashfs-error', class: 'decompression-failed', device: 'loop0', seq, time: new Date(1_700_000_000_000 + seq), message: 'SQUASHFS error', fields: { source: 'squashfs', rule: 'single-squashfs-loop', compressor: 'xz' }, block: { offset: seq * 4096 } })
  }
  const events = [...bootEvents(record), ...bootEvents({ ...record, result: 'ok', action: undefined, error: undefined }), ...c.drain('n1', 'boot-1')]
  t.same(events.map((e) => e.kind), ['fallback', 'boot-failed', 'fallback', 'boot', 'squashfs-error'])
  for (const e of events) t.same(parseEvent(JSON.parse(JSON.stringify(e)), { node: 'n1' }), { ok: true, event: JSON.parse(JSON.stringify(e)) }, e.kind)
})
