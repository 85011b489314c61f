/**
 * Usage errors as an operator sees them at the prompt (the bundled CLI):
 * one plain line naming what was wrong, where the options are, exit 2, and
 * no JSON log line or stack trace. Other failures keep their JSON line.
 */
import t from 'tap'
import { runCli } from '../helpers/run-cli.js'

t.test('a usage error is the plain message naming it, a pointer to --help, exit 2', async (t) => {
  for (const [args, first] of [
    [['cache', 'ls'], 'boot-agent cache: --cache: is required'],
    [['verify', '--cache', '/nonexistent', 'extra'], 'boot-agent verify: unexpected argument "extra"'],
    [['keygen'], 'boot-agent keygen: --out: is required'],
    [['cache', 'gc', '--cache', '/nonexistent', '--keep=-1'], 'boot-agent cache: --keep: not a non-negative integer: -1'],
  ] as const) {
    const r = runCli([...args])
    t.equal(r.status, 2, args.join(' '))
    const lines = r.stderr.trimEnd().split('\n')
    t.match(lines[0], first)
    t.notMatch(lines[0], /^(boot-agent \w+: ){2}/, 'the command named once (no "boot-agent verify: boot-agent verify:")')
    t.equal(r.stderr.split(`boot-agent ${args[0]} --help`).length, 2, 'one pointer to the options')
    t.notMatch(r.stderr, /"level"|\n\s+at /, 'no JSON line, no stack')
  }
})

t.test('a failure that is not a usage error keeps its JSON log line, exit 1', async (t) => {
  const r = runCli(['verify', '--cache', '/nonexistent-cache-dir'])
  t.equal(r.status, 1)
  t.match(r.stderr, /"code":"ENOCACHE"/)
  t.match(r.stderr, /boot-agent verify: no cache at \/nonexistent-cache-dir: no such directory/)
  t.notMatch(r.stderr, /--help` for its options/)
})

t.test('a command named like an Object.prototype property is an unknown command (issue #22, finding 4 kin)', async (t) => {
  for (const name of ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__']) {
    const r = runCli([name])
    t.equal(r.status, 2, name)
    t.match(r.stderr, `boot-agent: unknown command ${JSON.stringify(name)}`, name)
    t.notMatch(r.stderr, /\n\s+at /, 'no stack')
  }
})
