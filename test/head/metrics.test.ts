/**
 * The head's `GET /metrics` (#21 build item 2): the real head on loopback,
 * images published through the real publish path, boots reported as the
 * boot stage reports them; the scrape must say how many nodes run each
 * digest, which names are inconsistent, the events by kind and request
 * latencies by route, and `promtool check metrics` must accept it.
 */
import t from 'tap'
import { join } from 'node:path'
import { makeEvent } from '../../agent/protocol/event.js'
import { startHead } from '../../agent/head/server.js'
import { gate } from '../helpers/capability.js'
import { promtoolCheck } from '../helpers/prometheus.js'
import { call, imageBytes, postEvents, publishBytes, writeNodes } from '../helpers/head-fixtures.js'

const bootOf = (node: string, name: string, sha256: string) =>
  makeEvent('boot', node, { record: { result: 'ok', style: 'disked', fallbacks: [], cache: { hit: true }, bytesFetched: 0, image: { name, sha256 } } } as never, { image: { name, sha256 } })

t.test('GET /metrics: nodes per digest, inconsistent names, events by kind, latencies by route; promtool accepts it', gate('promtool'), async (t) => {
  const dir = t.testdir()
  const store = join(dir, 'store')
  const v1 = await publishBytes(store, 'CPE-base', imageBytes(300_000, 1), { dir })
  const v2 = await publishBytes(store, 'CPE-base', imageBytes(300_000, 2), { dir })
  const other = await publishBytes(store, 'login', imageBytes(100_000, 3), { dir })
  const nodes = await writeNodes(join(dir, 'nodes.json'), {
    schema: 1,
    defaults: { image: 'CPE-base', style: 'disked', partitions: { cache: 'LABEL=cwcache', root: 'LABEL=cwroot' } },
    nodes: { n1: {}, n2: {}, n3: {}, l1: { image: 'login' } },
  })
  const head = await startHead({ store, nodes })
  t.teardown(() => head.close())
  // Two nodes still on v1, one on v2 (current): CPE-base has mixed digests. The login node is consistent.
  for (const [n, sha] of [['n1', v1.sha256], ['n2', v1.sha256], ['n3', v2.sha256]] as const) {
    t.equal((await postEvents(head.url, n, [bootOf(n, 'CPE-base', sha)])).status, 200, `${n} boot stored`)
  }
  t.equal((await postEvents(head.url, 'l1', [bootOf('l1', 'login', other.sha256)])).status, 200)
  t.equal((await call(`${head.url}/v1/nodes/n1/boot`)).status, 200)
  t.equal((await call(`${head.url}/v1/nope`)).status, 404)

  const res = await call(`${head.url}/metrics`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const text = res.text
  const has = (line: string) => t.ok(text.split('\n').includes(line), line)
  has(`boot_agent_head_nodes{sha256="${v1.sha256}",name="CPE-base"} 2`)
  has(`boot_agent_head_nodes{sha256="${v2.sha256}",name="CPE-base"} 1`)
  has(`boot_agent_head_nodes{sha256="${other.sha256}",name="login"} 1`)
  has('boot_agent_head_inconsistent_names 1')
  has('boot_agent_head_image_consistent{name="CPE-base"} 0')
  has('boot_agent_head_image_consistent{name="login"} 1')
  has('boot_agent_head_events_total{kind="boot"} 4')
  t.match(text, /\nboot_agent_head_request_duration_seconds_count\{route="events",method="POST",code="200"\} 4\n/, 'event posts timed under their route')
  t.match(text, /\nboot_agent_head_request_duration_seconds_count\{route="descriptor",method="GET",code="200"\} 1\n/, 'descriptor timed')
  t.match(text, /\nboot_agent_head_request_duration_seconds_count\{route="none",method="GET",code="404"\} 1\n/, 'an unknown path counted as route none')
  const check = await promtoolCheck(text)
  t.equal(check.code, 0, `promtool check metrics: ${check.output.trim() || 'clean'}`)
  t.equal(check.output.trim(), '', 'no lint findings')

  const headOnly = await fetch(`${head.url}/metrics`, { method: 'HEAD' })
  t.equal(headOnly.status, 200, 'HEAD answers')
  t.equal((await call(`${head.url}/metrics`, { method: 'POST' })).status, 405, 'POST /metrics is refused (405)')
  t.equal((await call(`${head.url}/metricsx`)).status, 404, 'only the exact path is outside /v1')
})

t.test('GET /metrics needs the bearer token when the head wants one', async (t) => {
  const dir = t.testdir()
  const nodes = await writeNodes(join(dir, 'nodes.json'), { schema: 1, defaults: { image: 'x', style: 'disked', partitions: { cache: 'LABEL=c', root: 'LABEL=r' } }, nodes: {} })
  const head = await startHead({ store: join(dir, 'store'), nodes, token: 's3cret' })
  t.teardown(() => head.close())
  t.equal((await call(`${head.url}/metrics`)).status, 401)
  t.equal((await call(`${head.url}/metrics`, { headers: { authorization: 'Bearer s3cret' } })).status, 200)
})
