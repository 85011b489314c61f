/**
 * agent/core/log-format.ts: what a record reads like in the journal and on a
 * terminal. journald parses the `<N>` prefix into PRIORITY (so `journalctl -p`
 * filters), the rest of the line is MESSAGE: a sentence, then key=value facts.
 */
import t from 'tap'
import { factValue, formatRecord, prose } from '../../agent/core/log-format.js'

const rec = (level: string, msg: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ level, time: '2026-12-07T10:11:12.000Z', pid: 42, ...extra, msg })

t.test('errors are <3> (err), warnings <4> (warning), info <6>, debug <7>, fatal <2>', async (t) => {
  t.equal(formatRecord(rec('error', 'x'), 'journal'), '<3>x\n')
  t.equal(formatRecord(rec('warn', 'x'), 'journal'), '<4>x\n')
  t.equal(formatRecord(rec('info', 'x'), 'journal'), '<6>x\n')
  t.equal(formatRecord(rec('debug', 'x'), 'journal'), '<7>x\n')
  t.equal(formatRecord(rec('fatal', 'x'), 'journal'), '<2>x\n')
})

t.test('a sentence first, the facts after it; time and pid are left to the journal', async (t) => {
  const line = formatRecord(rec('error', 'integrity failure: image sha256:ab12 on /dev/loop3 (node n01)', {
    event: 'e1', kind: 'integrity', node: 'n01', image: 'sha256:ab12', device: '/dev/loop3', count: 3,
  }), 'journal')
  t.equal(line, '<3>integrity failure: image sha256:ab12 on /dev/loop3 (node n01) event=e1 kind=integrity node=n01 image=sha256:ab12 device=/dev/loop3 count=3\n')
  t.notMatch(line, /pid=|time=|level=/)
})

t.test('facts a script can split: values with spaces or = are JSON strings, objects JSON', async (t) => {
  t.equal(factValue('plain'), 'plain')
  t.equal(factValue('two words'), '"two words"')
  t.equal(factValue('a=b'), '"a=b"')
  t.equal(factValue(''), '""')
  t.equal(factValue(12), '12')
  t.equal(factValue(['a', 'b']), '["a","b"]')
  t.equal(prose({ msg: 'x', kinds: ['a'], path: '/a b' }), 'x kinds=["a"] path="/a b"')
})

t.test("an error's message joins the sentence once, its code is a fact", async (t) => {
  const err = { type: 'BootAgentError', message: 'connect ECONNREFUSED', code: 'ECONNREFUSED', stack: 'BootAgentError: connect ECONNREFUSED\n    at x (y.js:1:1)' }
  t.equal(prose({ msg: 'manifest fetch failed; retrying', err, attempt: 2 }), 'manifest fetch failed; retrying: connect ECONNREFUSED attempt=2 code=ECONNREFUSED')
  t.equal(prose({ msg: '[failed] fetch: connect ECONNREFUSED', op: 'fetch', err }), '[failed] fetch: connect ECONNREFUSED code=ECONNREFUSED', 'not said twice; op is in the sentence')
  t.equal(prose({ msg: 'heartbeat failed', err: 'disk full' }), 'heartbeat failed: disk full')
  t.equal(formatRecord({ level: 'error', msg: 'known', err }, 'journal'), '<3>known: connect ECONNREFUSED code=ECONNREFUSED\n', "a BootAgentError's stack is not printed")
})

t.test("an unexpected error's stack follows at debug priority, so -p err shows the error alone", async (t) => {
  const err = { type: 'TypeError', message: 'x is not a function', stack: 'TypeError: x is not a function\n    at a (b.js:1:2)\n    at c (d.js:3:4)' }
  const out = formatRecord({ level: 'error', msg: 'boom', err }, 'journal')
  t.equal(out, '<3>boom: x is not a function\n<7>  at a (b.js:1:2)\n<7>  at c (d.js:3:4)\n')
})

t.test('one record is one journal line: newlines in a message do not start an entry at info', async (t) => {
  t.equal(formatRecord(rec('error', 'line one\nline two'), 'journal'), '<3>line one line two\n')
})

t.test('on a terminal: time, level as journalctl -p names it, sentence, facts', async (t) => {
  const line = formatRecord(rec('warn', 'boot fell back', { node: 'n1' }), 'text')
  t.match(line, /^\d\d:\d\d:\d\d warning boot fell back node=n1\n$/)
})
