/**
 * Fuzzing every parser that reads outside input (issue #22, docs/reliability.md):
 * FUZZ_RUNS generated inputs each, from a fixed seed, half structure-aware
 * (valid documents mutated) and half raw (strings, bytes, any JSON value).
 * What must hold for every input: no crash (a refusal is a BootAgentError
 * with the parser's own code, nothing else escapes), no hang (each call
 * under HANG_MS), every refusal names the field it refuses, and what is
 * accepted keeps the parser's promises (ranges inside the file, chunks that
 * cover the image, no prototype name taken for a configured node).
 */
import t from 'tap'
import fc from 'fast-check'
import { BootAgentError } from '../../agent/core/errors.js'
import { parseManifest } from '../../agent/manifest/schema.js'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { parseDescriptor } from '../../agent/boot/descriptor.js'
import { descriptorFor, planFor } from '../../agent/head/descriptor.js'
import { KEY_PREFIX, parseBootCmdline } from '../../agent/boot/cmdline.js'
import { parseKmsgRecord } from '../../agent/daemon/kmsg.js'
import { classify } from '../../agent/daemon/classify.js'
import { parseEventBatch } from '../../agent/head/validate-events.js'
import { parseEventJson } from '../../agent/protocol/parse.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { configuredNode, parseNodesConfig } from '../../agent/head/nodes-config.js'
import { parseRange } from '../../agent/head/range.js'
import { manifestFor } from '../helpers/image.js'
import { anyValue, FUZZ_RUNS, judge, mutatedDoc, mutatedText, newTally, type Tally } from './fuzz-lib.js'

/** One seed per parser, printed, so a failure reproduces (`FUZZ_SEED=… ` overrides all of them). */
const seedFor = (n: number): number => (process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : 0x22_0000 + n)
const RUNS = process.env.FUZZ_RUNS ? Number(process.env.FUZZ_RUNS) : FUZZ_RUNS

const SHA = 'a'.repeat(64)
const PROTO_NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__proto__']

const campaign = (name: string, seedNo: number, arb: fc.Arbitrary<unknown>, check: (input: unknown) => void, tally: Tally) =>
  t.test(`${name}: ${RUNS} generated inputs, no crash, no hang, every refusal names the field`, async (t) => {
    const seed = seedFor(seedNo)
    const t0 = Date.now()
    const r = fc.check(fc.property(arb, (input) => check(input)), { seed, numRuns: RUNS, endOnFailure: true })
    const ms = Date.now() - t0
    t.comment(`${name}: seed ${seed}, ${tally.inputs} inputs (${tally.accepted} accepted, ${tally.refused} refused), slowest ${tally.slowestMs.toFixed(1)} ms, ${ms} ms in all`)
    t.notOk(r.failed, r.failed ? `${name}: seed ${seed} path ${r.counterexamplePath}: ${String(r.errorInstance instanceof Error ? r.errorInstance.message : r.errorInstance)} on ${fc.stringify(r.counterexample)}`.slice(0, 2000) : `${name} held`)
    t.ok(tally.inputs >= RUNS, `${name}: at least ${RUNS} inputs were judged (${tally.inputs})`)
    t.ok(tally.accepted > 0 && tally.refused > 0, `${name}: the inputs reached both sides (accepted ${tally.accepted}, refused ${tally.refused})`)
  })

/** The refusal's message names its `field`/`key` context. */
const namesContext = (key: 'field' | 'key') => (e: BootAgentError): boolean => {
  const f = e.context[key]
  return typeof f === 'string' && f.length > 0 && e.message.includes(f)
}

// ---- manifest (agent/manifest/schema.ts) ----
{
  const data = Buffer.alloc(300 * 1024, 7)
  data.fill(3, 100_000)
  const m = manifestFor(data, ['http://head/v1/images/x/image'])
  const signedLike = { ...m, xxh64Segments: ['0123456789abcdef'], signature: { algorithm: 'ed25519', keyId: 'k1', value: 'AAAA' } }
  const docs = [JSON.parse(serializeManifest(m)) as unknown, signedLike]
  const texts = docs.map((d) => JSON.stringify(d))
  const tally = newTally()
  const check = judge(tally, (input: unknown) => parseManifest(input, { baseUrl: 'http://head/v1/images/x/manifest' }), {
    codes: ['EMANIFEST'],
    namesField: namesContext('field'),
    onValue: (v) => {
      if (v.chunks.reduce((n, c) => n + c.size, 0) !== v.size) throw new Error('accepted a manifest whose chunks do not cover its size')
    },
  })
  campaign('manifest', 1, fc.oneof(
    { weight: 5, arbitrary: mutatedDoc(docs) },
    { weight: 2, arbitrary: mutatedText(texts) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 100 }) },
    { weight: 1, arbitrary: anyValue },
  ), check, tally)
}

// ---- boot descriptor, node side (agent/boot/descriptor.ts) ----
{
  const docs = [
    {
      schema: 1, node: 'n1', style: 'disked',
      image: { name: 'base', sha256: SHA, size: 4096, manifest: `/v1/images/by-digest/${SHA}/manifest` },
      partitions: { cache: 'LABEL=cwcache', root: 'PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4' },
      policies: { cacheFull: 'ram', verify: 'strong', onfail: 'reboot' },
    },
    { schema: 1, node: 'n2', image: { name: 'b', sha256: SHA, size: 1, manifest: 'http://mirror:81/m', arch: 'x86_64' }, partitions: { cache: null, root: '/dev/sda2' }, policies: {} },
  ]
  const tally = newTally()
  const check = judge(tally, (input: unknown) => parseDescriptor(input, 'http://head:8080'), { codes: ['EDESCRIPTOR'], namesField: namesContext('field') })
  campaign('boot descriptor (node)', 2, fc.oneof(
    { weight: 6, arbitrary: mutatedDoc(docs) },
    { weight: 2, arbitrary: mutatedText(docs.map((d) => JSON.stringify(d))).map((s) => { try { return JSON.parse(s) as unknown } catch { return s } }) },
    { weight: 2, arbitrary: anyValue },
  ), check, tally)
}

// ---- nodes file (agent/head/nodes-config.ts, read by head/nodes-file.ts) ----
const NODES_DOCS = [
  {
    schema: 1,
    defaults: { image: 'base', style: 'disked', partitions: { cache: 'LABEL=cwcache', root: 'LABEL=cwroot' }, policies: { verify: 'fast' } },
    architectures: { aarch64: { image: 'base-arm', policies: { onfail: 'shell' } } },
    groups: { gpu: { image: 'gpu', style: 'roram', partitions: { root: '/dev/nvme0n1p4' } } },
    nodes: { plain: {}, g1: { group: 'gpu' }, arm: { arch: 'arm64' }, pinned: { group: 'gpu', image: `base@sha256:${SHA}`, policies: { verify: 'strong' } } },
    images: { base: { arch: 'x86_64' } },
  },
  { schema: 1, nodes: { n1: { image: 'x' } } },
]
{
  const tally = newTally()
  const check = judge(tally, (input: unknown) => parseNodesConfig(input), {
    codes: ['ECONFIG'],
    namesField: namesContext('key'),
    onValue: (config, input) => {
      const listed = (input as { nodes: object }).nodes
      for (const p of PROTO_NAMES) if (configuredNode(config, p) && !Object.hasOwn(listed, p)) throw new Error(`accepted nodes file makes ${p} a configured node`)
    },
  })
  campaign('nodes file', 3, fc.oneof(
    { weight: 6, arbitrary: mutatedDoc(NODES_DOCS) },
    { weight: 2, arbitrary: mutatedText(NODES_DOCS.map((d) => JSON.stringify(d))).map((s) => { try { return JSON.parse(s) as unknown } catch { return s } }) },
    { weight: 2, arbitrary: anyValue },
  ), check, tally)
}

// ---- boot descriptor, head side (agent/head/descriptor.ts): node id and ?arch= from the request ----
{
  const config = parseNodesConfig(NODES_DOCS[0])
  const entry = { sha256: SHA, size: 4096, arch: 'x86_64' as const, publishedAt: '2026-01-01T00:00:00.000Z' }
  const tally = newTally()
  const nodeArb = fc.oneof(fc.constantFrom('plain', 'g1', 'arm', 'pinned', 'ghost', ...PROTO_NAMES), fc.string({ maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 20 }))
  const archArb = fc.oneof(fc.constant(null), fc.constantFrom('x86_64', 'amd64', 'aarch64', 'arm64', 'ppc64le', 'riscv64', 'X86_64', '', 'toString', '__proto__'), fc.string({ maxLength: 12 }))
  const check = judge(tally, ([node, arch]: [string, string | null]) => descriptorFor(config, planFor(config, node, arch), entry as never), {
    codes: ['ENONODE', 'ENOIMAGE', 'EARCH', 'EBADARCH'],
    // The refusal names what it refuses: the node id (as JSON) or the architecture asked for.
    namesField: (e, [node, arch]) => (e.code === 'EBADARCH' ? e.message.includes(JSON.stringify(arch)) : e.message.includes(JSON.stringify(node)) || e.message.includes(`node ${node} `)),
    onValue: (d, [node]) => {
      if (PROTO_NAMES.includes(node)) throw new Error(`a descriptor for ${node}, a name no nodes file configured`)
      if (d.node !== node) throw new Error('descriptor for another node')
    },
  })
  campaign('boot descriptor (head)', 4, fc.tuple(nodeArb, archArb), check as (i: unknown) => void, tally)
}

// ---- kernel command line (agent/boot/cmdline.ts) ----
{
  // The keys of boot/cmdline.ts KNOWN_KEYS, and one it does not know.
  const KEYS = ['server', 'node', 'style', 'cache', 'root', 'verify', 'pubkey', 'onfail', 'format', 'cachefull', 'ramstyle', 'devtimeout', 'timeout', 'rebootdelay', 'nosuch']
  const VALUES = ['http://head:8080', 'https://h/x', 'n1', 'disked', 'rwram', 'LABEL=cwcache', 'UUID=1234-abcd', 'PARTUUID=x', '/dev/sda1', 'fast', 'strong', 'reboot', 'ram', '30', '0.5', 'cache,root', 'none', '/etc/boot-agent/key.pem', 'roram', 'clear-reboot', '']
  const param = fc.tuple(
    fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KEYS).map((k) => KEY_PREFIX + k) }, { weight: 1, arbitrary: fc.string({ maxLength: 16 }) }),
    fc.oneof(fc.constantFrom(...VALUES), fc.string({ maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 10 })),
    fc.constantFrom('', '"', "'"),
    fc.boolean(),
  ).map(([k, v, q, bare]) => (bare ? k : `${k}=${q}${v}${q}`))
  const structured = fc.array(param, { maxLength: 8 }).chain((ps) => fc.constantFrom(' ', '  ', '\t', '\n').map((sep) => ps.join(sep)))
  const valid = ['root=live rd.bootagent.server=http://head:8080 rd.bootagent.node=n1 rd.bootagent.style=disked rd.bootagent.cache=LABEL=cwcache quiet', 'rd.bootagent.server="http://h:1/" rd.bootagent.verify=strong rd.bootagent.onfail=shell']
  const tally = newTally()
  const check = judge(tally, (text: string) => parseBootCmdline(text, { warn: () => undefined }), {
    codes: ['ECONFIG'],
    namesField: (e) => namesContext('key')(e) && String(e.context.key).startsWith(KEY_PREFIX),
  })
  campaign('kernel command line', 5, fc.oneof(
    { weight: 5, arbitrary: structured },
    { weight: 3, arbitrary: mutatedText(valid) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  ), check as (i: unknown) => void, tally)
}

// ---- kmsg record (agent/daemon/kmsg.ts) and its classification (agent/daemon/classify.ts) ----
{
  const samples = [
    '3,343,427138241,-;SQUASHFS error: xz decompression failed, data probably corrupt\n',
    '3,346,427155693,-;SQUASHFS error: Failed to read block 0x18b44: -5\n SUBSYSTEM=block\n DEVICE=b7:0\n',
    '3,12,5000,-;I/O error, dev loop0, sector 1234 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2\n',
    '3,13,5001,c;EXT4-fs error (device sda2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0\n',
    '6,3,4,-;loop0: detected capacity change from 0 to 8\\x0a\n',
  ]
  const structured = fc
    .tuple(fc.oneof(fc.nat({ max: 200 }), fc.integer()), fc.oneof(fc.nat(), fc.bigInt({ min: 0n, max: 2n ** 70n })), fc.nat(), fc.constantFrom('-', 'c', '+', '', 'cc'),
      fc.oneof(fc.constantFrom('SQUASHFS error: ', 'I/O error, dev loop', 'EXT4-fs error (device ', 'blk_update_request: I/O error, dev sda, sector '), fc.string({ maxLength: 10 })),
      fc.string({ unit: 'binary', maxLength: 60 }), fc.array(fc.tuple(fc.constantFrom('DEVICE', 'SUBSYSTEM', 'x', ''), fc.string({ maxLength: 12 })), { maxLength: 3 }))
    .map(([p, s, u, f, head, msg, dict]) => `${p},${s},${u},${f};${head}${msg}\n${dict.map(([k, v]) => ` ${k}=${v}`).join('\n')}`)
  const tally = newTally()
  const check = judge(tally, (raw: string) => {
    const r = parseKmsgRecord(raw)
    if (r === undefined) throw new BootAgentError('EINTERNAL', 'not a record (field: record)', { field: 'record' })
    classify(r)
    return r
  }, {
    // parseKmsgRecord refuses by returning undefined (read as the refusal above); nothing may throw.
    codes: ['EINTERNAL'],
    namesField: namesContext('field'),
    onValue: (r) => {
      if (!Number.isSafeInteger(r.seq) || r.seq < 0) throw new Error(`accepted a record with seq ${r.seq}`)
    },
  })
  campaign('kmsg record', 6, fc.oneof(
    { weight: 5, arbitrary: structured },
    { weight: 3, arbitrary: mutatedText(samples) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  ), check as (i: unknown) => void, tally)
}

// ---- event batch (agent/protocol/parse.ts through agent/head/validate-events.ts) ----
{
  const img = { name: 'base', sha256: SHA }
  const events = [
    makeEvent('integrity', 'n1', { algorithm: 'sha256', expected: SHA, found: 'c'.repeat(64), chunk: 3 }, { image: img }),
    makeEvent('fallback', 'n1', { kind: 'root-missing', reason: 'no root', requestedStyle: 'disked', style: null }),
    makeEvent('squashfs-error', 'n1', { class: 'decompression-failed', device: 'loop0', message: 'SQUASHFS error', count: 2, kmsg: { bootId: 'b', firstSeq: 3, lastSeq: 4, seqs: [[3, 4]] } }),
    makeEvent('lost', 'n1', { source: 'kmsg', count: 3 }),
  ]
  const docs = [{ events: JSON.parse(JSON.stringify(events)) as unknown }, { events: [JSON.parse(JSON.stringify(events[0])) as unknown] }]
  const tally = newTally()
  const check = judge(tally, (body: unknown) => {
    const out = parseEventBatch(body, 'n1', { maxEventsPerBatch: 50, maxEventBytes: 16 * 1024 })
    // The same events read back from the head's event log (one JSON line each) must parse again as they are.
    for (const e of out) {
      const again = parseEventJson(JSON.stringify(e), { node: 'n1' })
      if (!again.ok) throw new Error(`an accepted event does not parse back from its stored line: ${again.field} ${again.problem}`)
    }
    return out
  }, {
    codes: ['EBADEVENT', 'ETOOMANY', 'ETOOLARGE'],
    namesField: (e) => (e.code === 'ETOOMANY' ? /batch holds \d+ events/.test(e.message) : namesContext('field')(e)),
  })
  campaign('event batch', 7, fc.oneof(
    { weight: 6, arbitrary: mutatedDoc(docs) },
    { weight: 2, arbitrary: mutatedText(docs.map((d) => JSON.stringify(d))).map((s) => { try { return JSON.parse(s) as unknown } catch { return s } }) },
    { weight: 2, arbitrary: anyValue },
  ), check, tally)
}

// ---- Range header (agent/head/range.ts) ----
{
  const num = fc.oneof(fc.constant(''), fc.nat().map(String), fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String), fc.constantFrom('-1', '1e3', '0x10', ' 5', '00', '9007199254740993'))
  const structured = fc.tuple(fc.constantFrom('bytes=', 'bytes =', 'Bytes=', 'bytes= ', 'items=', ''), num, fc.constantFrom('-', ' - ', '--', ''), num, fc.constantFrom('', ',0-1', ', 5-', ' '))
    .map(([u, a, d, b, more]) => `${u}${a}${d}${b}${more}`)
  const tally = newTally()
  const check = judge(tally, ([header, size]: [string | undefined, number]) => {
    const r = parseRange(header, size)
    if (r === undefined) throw new BootAgentError('EINTERNAL', 'ignored (field: range)', { field: 'range' })
    return r
  }, {
    // A Range the head ignores is served whole (RFC 9110 allows it): read as the refusal above; nothing may throw.
    codes: ['EINTERNAL'],
    namesField: namesContext('field'),
    onValue: (r, [, size]) => {
      if (r === 'unsatisfiable') return
      if (!(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end) && r.start >= 0 && r.start <= r.end && r.end < size)) {
        throw new Error(`range ${r.start}-${r.end} outside a file of ${size} bytes`)
      }
    },
  })
  campaign('Range header', 8, fc.tuple(
    fc.oneof({ weight: 6, arbitrary: structured }, { weight: 2, arbitrary: mutatedText(['bytes=0-99', 'bytes=-500', 'bytes=100-']) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) }, { weight: 1, arbitrary: fc.constant(undefined) }),
    fc.oneof(fc.nat({ max: 1 << 20 }), fc.constantFrom(0, 1, 2 ** 40, Number.MAX_SAFE_INTEGER)),
  ), check as (i: unknown) => void, tally)
}
