/**
 * `boot-agent nodes` against things that are not a head node, through the
 * real bundle: a web server or rack cache answering 200 with HTML or other
 * JSON used to end in `rows.map is not a function` or a bare JSON
 * SyntaxError (EUNEXPECTED) naming no URL; a --head URL with a password in it
 * was echoed into the error and the log.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { startHead } from '../../agent/head/server.js'
import { runCliAsync } from '../helpers/run-cli.js'

t.test('an answer that is not a node list is an error naming the URL and what to check', async (t) => {
  let body = ''
  const server = createServer((_req, res) => res.end(body))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  for (const answer of ['<html>rack cache</html>', '{"nodes":"x"}', '[1,2]', '{"nodes":[{"node":5}]}']) {
    body = answer
    const r = await runCliAsync(['nodes', '--head', url], { timeoutMs: 30_000 })
    t.equal(r.status, 1, `${answer}: exit 1`)
    t.match(r.stderr, `boot-agent nodes: ${url}/v1/nodes answered, but not with a head node's node list`, answer)
  }
  body = '{"schema":1,"nodes":[{"node":"n1","lastBoot":{"time":5,"result":"ok","style":null}}]}'
  const odd = await runCliAsync(['nodes', '--head', url], { timeoutMs: 30_000 })
  t.equal(odd.status, 0, 'an odd field is shown as it is, not a crash')
  t.match(odd.stdout, /^n1 /m)
})

t.test('a --head URL carrying a password is refused without repeating it', async (t) => {
  const r = await runCliAsync(['nodes', '--head', 'http://admin:hunter2@127.0.0.1:1'], { timeoutMs: 30_000 })
  t.equal(r.status, 2)
  t.match(r.stderr, /--head: must not carry credentials/)
  t.notMatch(r.stderr, /hunter2/)
})

// Against a new head (no nodes file entries, no events) `nodes` printed only the table header.
t.test('a head that knows no node yet says so, not a bare table header', async (t) => {
  const dir = t.testdir()
  const head = await startHead({ store: join(dir, 'store'), nodes: { schema: 1, defaults: {}, architectures: {}, groups: {}, nodes: {}, images: {} } })
  t.teardown(() => head.close())
  const r = await runCliAsync(['nodes', '--head', head.url], { timeoutMs: 30_000 })
  t.equal(r.status, 0)
  t.match(r.stdout, /^no nodes yet: the nodes file lists none and none has sent events/m)
  t.notMatch(r.stdout, /^NODE /m)
  const j = await runCliAsync(['nodes', '--head', head.url, '--json'], { timeoutMs: 30_000 })
  t.match(JSON.parse(j.stdout), { nodes: [] }, '--json keeps the answer as it is')
})
