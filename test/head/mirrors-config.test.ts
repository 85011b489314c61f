/**
 * Mirrors by group (issue 20): the nodes file gives a group its ordered
 * mirror list and a streams policy; the descriptor hands the list to the node
 * as by-digest image URLs; the node parses and bounds both.
 */
import t from 'tap'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { parseDescriptor } from '../../agent/boot/descriptor.js'
import { descriptorFor, planFor } from '../../agent/head/descriptor.js'
import { parseNodesConfig } from '../../agent/head/nodes-config.js'

const X = 'a'.repeat(64)
const entry = { name: 'os', sha256: X, size: 1000, arch: 'x86_64' as const, time: '2026-01-01T00:00:00.000Z' }

const config = parseNodesConfig({
  schema: 1,
  defaults: { image: 'os', mirrors: ['http://head:8080'] },
  groups: { rack7: { mirrors: ['http://rack7-cache:8081/', 'http://head:8080'], policies: { streams: 2 } } },
  nodes: { a: { group: 'rack7' }, b: {}, c: { group: 'rack7', mirrors: ['https://objects.example/boot'] } },
})

t.test('a group\'s mirrors, in order, become by-digest image URLs in the descriptor; the most specific list wins whole', async (t) => {
  const a = descriptorFor(config, planFor(config, 'a', null), entry)
  t.same(a.image.mirrors, [`http://rack7-cache:8081/v1/images/by-digest/${X}/image`, `http://head:8080/v1/images/by-digest/${X}/image`])
  t.equal(a.policies.streams, 2)
  t.same(descriptorFor(config, planFor(config, 'b', null), entry).image.mirrors, [`http://head:8080/v1/images/by-digest/${X}/image`], 'defaults')
  t.same(descriptorFor(config, planFor(config, 'c', null), entry).image.mirrors, [`https://objects.example/boot/v1/images/by-digest/${X}/image`], 'node over group')
  const none = parseNodesConfig({ schema: 1, defaults: { image: 'os' }, nodes: { z: {} } })
  t.notOk('mirrors' in descriptorFor(none, planFor(none, 'z', null), entry).image, 'no mirrors configured: no field (the manifest\'s urls)')
})

t.test('bad mirrors and streams in the nodes file are refused naming the field', async (t) => {
  const bad = (groups: unknown, field: RegExp) =>
    t.throws(() => parseNodesConfig({ schema: 1, groups, nodes: {} }), { code: 'ECONFIG', message: field }, String(field))
  bad({ g: { mirrors: 'http://x' } }, /groups\.g\.mirrors/)
  bad({ g: { mirrors: [] } }, /groups\.g\.mirrors/)
  bad({ g: { mirrors: ['ftp://x'] } }, /groups\.g\.mirrors\[0\]/)
  bad({ g: { mirrors: ['http://u:p@x'] } }, /groups\.g\.mirrors\[0\]/)
  bad({ g: { policies: { streams: 0 } } }, /groups\.g\.policies\.streams/)
  bad({ g: { policies: { streams: 17 } } }, /groups\.g\.policies\.streams/)
})

t.test('the node takes the descriptor\'s mirrors (resolved against the server) and streams, within bounds', async (t) => {
  const base = { schema: 1, node: 'a', image: { name: 'os', sha256: X, size: 1000, manifest: '/m' } }
  const d = parseDescriptor({ ...base, image: { ...base.image, mirrors: ['http://rack:1/i', '/v1/images/by-digest/x/image'] }, policies: { streams: 4 } }, 'http://head:8080')
  t.same(d.image.mirrors, ['http://rack:1/i', 'http://head:8080/v1/images/by-digest/x/image'])
  t.equal(d.policies.streams, 4)
  t.throws(() => parseDescriptor({ ...base, image: { ...base.image, mirrors: ['file:///etc/passwd'] } }, 'http://h'), /image\.mirrors\[0\]/)
  t.throws(() => parseDescriptor({ ...base, image: { ...base.image, mirrors: 'http://x' } }, 'http://h'), /image\.mirrors/)
  t.throws(() => parseDescriptor({ ...base, policies: { streams: 99 } }, 'http://h'), /policies\.streams/)
})

t.test('rd.bootagent.streams: 1 to 16, else an error naming the key', async (t) => {
  t.equal(parseBootCmdline('rd.bootagent.streams=8').streams, 8)
  for (const v of ['0', '17', 'x', '2.5']) t.throws(() => parseBootCmdline(`rd.bootagent.streams=${v}`), /rd\.bootagent\.streams/, v)
})

// A mirror listed twice (`http://rack7:8081` and `http://rack7:8081/`) was handed to
// the node twice: a dead rack cache was waited on twice before the next mirror.
t.test('a mirror listed twice in one list is refused naming both places', async (t) => {
  const err = (() => {
    try {
      parseNodesConfig({ schema: 1, groups: { r: { mirrors: ['http://rack7:8081', 'http://head:8080', 'http://rack7:8081/'] } }, nodes: {} })
    } catch (e) {
      return (e as Error).message
    }
    return 'accepted'
  })()
  t.match(err, /groups\.r\.mirrors\[2\].*mirrors\[0\]/)
})
