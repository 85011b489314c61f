/**
 * `boot-agent head` flags a clumsy administrator gets wrong, through the real
 * bundle: an empty --token (from `--token "$(cat missing-file)"`) used to
 * start an open head saying only `auth=false` at info; a token with a space
 * or newline started a head no request could ever pass (a node sends its
 * token file's first line, trimmed, and an HTTP header cannot carry a
 * newline). A --listen address that is taken or not on this machine was an
 * EUNEXPECTED errno (exit 1) naming no flag.
 */
import t from 'tap'
import { createServer } from 'node:net'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCliAsync } from '../helpers/run-cli.js'

const setup = async (dir: string): Promise<string[]> => {
  await writeFile(join(dir, 'nodes.json'), JSON.stringify({ schema: 1, nodes: {} }))
  return ['head', '--store', join(dir, 'store'), '--init', '--nodes', join(dir, 'nodes.json')]
}

t.test('an empty or unsendable --token is refused before listening, without echoing it', async (t) => {
  const args = await setup(t.testdir())
  for (const [how, extra, env] of [
    ['--token ""', ['--token', ''], {}],
    ['--token with a newline', ['--token', 's3cret-value\n'], {}],
    ['--token with a space', ['--token', 's3cret value'], {}],
    ['BOOT_AGENT_HEAD_TOKEN with a newline', [], { BOOT_AGENT_HEAD_TOKEN: 's3cret-value\n' }],
  ] as const) {
    const r = await runCliAsync([...args, '--listen', '127.0.0.1:0', ...extra], { env, timeoutMs: 30_000 })
    t.equal(r.status, 2, `${how}: exit 2`)
    t.match(r.stderr, how.startsWith('BOOT') ? /BOOT_AGENT_HEAD_TOKEN/ : /--token/, `${how}: names where the token came from`)
    t.notMatch(r.stderr, /s3cret/, `${how}: the token is not repeated`)
  }
})

t.test('a --listen address in use or not on this machine is a usage error naming --listen', async (t) => {
  const args = await setup(t.testdir())
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())))
  const port = (taken.address() as { port: number }).port
  const inUse = await runCliAsync([...args, '--listen', `127.0.0.1:${port}`], { timeoutMs: 30_000 })
  t.equal(inUse.status, 2)
  t.match(inUse.stderr, new RegExp(`--listen: 127\\.0\\.0\\.1:${port} is already in use`))
  const notHere = await runCliAsync([...args, '--listen', '192.0.2.1:8080'], { timeoutMs: 30_000 })
  t.equal(notHere.status, 2)
  t.match(notHere.stderr, /--listen: 192\.0\.2\.1:8080 is not an address of this machine/)
})

// --events naming a file (the nodes file, by a slip) was EUNEXPECTED "EEXIST: mkdir", naming no flag.
t.test('an --events path that is a file is a usage error naming --events', async (t) => {
  const dir = t.testdir()
  const args = await setup(dir)
  const r = await runCliAsync([...args, '--listen', '127.0.0.1:0', '--events', join(dir, 'nodes.json')], { timeoutMs: 30_000 })
  t.equal(r.status, 2)
  t.match(r.stderr, `--events: ${join(dir, 'nodes.json')} is not a directory`)
})

// --events under /proc spun forever at 100 % CPU, deaf to SIGTERM (Node 20's recursive mkdir retries procfs's ENOENT).
t.test('an --events path that cannot be made (under /proc) is a prompt usage error naming --events', async (t) => {
  const dir = t.testdir()
  const args = await setup(dir)
  const r = await runCliAsync([...args, '--listen', '127.0.0.1:0', '--events', '/proc/boot-agent-events'], { timeoutMs: 20_000 })
  t.equal(r.status, 2)
  t.match(r.stderr, /--events: cannot create directory \/proc\/boot-agent-events/)
})
