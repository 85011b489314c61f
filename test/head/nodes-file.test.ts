import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadNodesFile, NodesSource } from '../../agent/head/nodes-file.js'
import { silentLogger } from '../../agent/core/log.js'

t.test('a nodes file that cannot be read, is not JSON or is not a nodes file is a ConfigError naming --nodes and the file', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'nodes.json')
  await t.rejects(loadNodesFile(path), { code: 'ECONFIG', key: '--nodes', message: new RegExp(`cannot read ${path}`) })
  await writeFile(path, '{"schema": 1, "nodes": ')
  await t.rejects(loadNodesFile(path), { key: '--nodes', message: /is not valid JSON/ })
  await writeFile(path, '{"schema": 1, "nodes": {"n1": {"style": "floppy"}}}')
  await t.rejects(loadNodesFile(path), { key: '--nodes', message: new RegExp(`${path}: .*floppy`) })
})

t.test('a reload keeps the config in force when the new file is bad, and takes a good one', async (t) => {
  const path = join(t.testdir(), 'nodes.json')
  await writeFile(path, JSON.stringify({ schema: 1, nodes: { n1: {} } }))
  const src = await NodesSource.open(path, silentLogger())
  t.same(Object.keys(src.config.nodes), ['n1'])
  await writeFile(path, 'nope')
  t.equal(await src.reload(), false)
  t.same(Object.keys(src.config.nodes), ['n1'])
  await writeFile(path, JSON.stringify({ schema: 1, nodes: { n2: {} } }))
  t.equal(await src.reload(), true)
  t.same(Object.keys(src.config.nodes), ['n2'])
  const fixed = await NodesSource.open(src.config, silentLogger())
  t.equal(await fixed.reload(), false, 'a config given parsed has no file to reload')
})
