import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { bootRecordPath, parseBootRecord, readBootRecord } from '../../agent/daemon/boot-record.js'
import { system } from '../../agent/core/system.js'

const A = 'a'.repeat(64)

t.test('a full boot record is read with every field the daemon uses and no problems', async (t) => {
  const rec = {
    node: 'n1', server: 'https://head:8443', style: 'disked', requestedStyle: 'disked', result: 'ok', spoolDir: '/var/spool/x',
    fallbacks: [{ kind: 'no-root', reason: 'missing' }],
    image: { name: 'CPE-base', sha256: A, size: 1024 },
    cache: { spec: 'LABEL=cache', device: '/dev/sda2', mountpoint: '/cache', hit: true, objectPath: '/cache/objects/x' },
    root: { spec: 'LABEL=root', device: '/dev/sda3' },
    extra: 'ignored',
  }
  const { extra: _extra, ...expected } = rec
  t.same(parseBootRecord(JSON.stringify(rec)), { ...expected, problems: [] })
})

t.test('fields of the wrong type are left out and named as problems, never trusted', async (t) => {
  const v = parseBootRecord(JSON.stringify({
    node: 5, style: 'rwram',
    image: { name: ['x'], sha256: 'A'.repeat(64), size: 1.5 },
    cache: { device: {}, hit: 'yes' },
    root: { spec: null, device: 3 },
    fallbacks: [{ kind: 'k' }, { reason: 'no kind' }, 'junk'],
  }))
  t.same(v, {
    style: 'rwram',
    fallbacks: [{ kind: 'k', reason: '' }],
    image: {},
    cache: {},
    root: {},
    problems: ['node is not a string', 'image.name is not a string', 'image.sha256 is not a lower-case hex sha256', 'cache.device is not a string', 'root.device is not a string'],
  })
})

t.test('text that is not a JSON object is refused', async (t) => {
  t.throws(() => parseBootRecord('[1,2]'), /not a JSON object/)
  t.throws(() => parseBootRecord('null'), /not a JSON object/)
  t.throws(() => parseBootRecord('{'), SyntaxError)
})

t.test('readBootRecord: no file means not booted by boot-agent; a file is parsed', async (t) => {
  const dir = t.testdir({ 'boot-record.json': JSON.stringify({ node: 'n9', image: { sha256: A } }) })
  t.equal(await readBootRecord(join(dir, 'missing.json')), undefined)
  t.match(await readBootRecord(join(dir, 'boot-record.json')), { node: 'n9', image: { sha256: A }, problems: [] })
  await writeFile(join(dir, 'bad.json'), 'garbage')
  // Named, with its code: a bare JSON SyntaxError (EUNEXPECTED) named no file, and the daemon restarted on it in a loop.
  await t.rejects(readBootRecord(join(dir, 'bad.json')), { code: 'EBADRECORD', message: new RegExp(`${join(dir, 'bad.json')}.*not JSON`) }, 'a corrupt record is an error, not "no record"')
  await writeFile(join(dir, 'empty.json'), '')
  await t.rejects(readBootRecord(join(dir, 'empty.json')), { code: 'EBADRECORD' })
})

t.test('the default path is boot-record.json in the run dir', async (t) => {
  t.equal(bootRecordPath(), join(system.runDir, 'boot-record.json'))
})

// --boot-record /dev/zero read until V8's string limit ("Invalid string length", ~512 MiB in memory);
// a directory was a bare EISDIR.
t.test('a boot record that is not a small regular file is EBADRECORD naming the path, read no further', async (t) => {
  const dir = t.testdir({ 'big.json': ' '.repeat(2 * 1024 * 1024) })
  await t.rejects(readBootRecord('/dev/zero'), { code: 'EBADRECORD', message: /^\/dev\/zero is not a regular file/ })
  await t.rejects(readBootRecord(dir), { code: 'EBADRECORD', message: /is not a regular file/ })
  await t.rejects(readBootRecord(`${dir}/big.json`), { code: 'EBADRECORD', message: /big\.json is 2097152 bytes, more than a boot record's 1048576/ })
})
