/**
 * A node given the head's site token as its own credential (`tokenSha256`
 * = sha256 of --token): the token authenticates as the site, and the site
 * token may not speak for a node with its own credential, so every request
 * of that node was refused 403 while the head said nothing at start. Now the
 * nodes file is refused at start, and at reload (the old one kept), naming
 * the node.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { ConfigError } from '../../agent/core/errors.js'
import { silentLogger } from '../../agent/core/log.js'
import { startHead } from '../../agent/head/server.js'
import { writeNodes } from '../helpers/head-fixtures.js'

const SITE = 'site-token-0123456789abcdef'
const digest = (s: string): string => createHash('sha256').update(s).digest('hex')

t.test("a node whose tokenSha256 is the site token's is refused at start and at reload", async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'nodes.json')
  await writeNodes(file, { schema: 1, nodes: { n1: { tokenSha256: digest(SITE) } } })
  const err = await startHead({ store: join(dir, 'store'), nodes: file, token: SITE, listen: '127.0.0.1:0', log: silentLogger() }).then(
    async (h) => {
      await h.close()
      return undefined
    },
    (e: unknown) => e,
  )
  t.ok(err instanceof ConfigError, 'refused at start')
  t.match((err as Error).message, /nodes\.n1\.tokenSha256.*site token/)

  await writeNodes(file, { schema: 1, nodes: { n1: { tokenSha256: digest('n1-own-token') } } })
  const head = await startHead({ store: join(dir, 'store'), nodes: file, token: SITE, listen: '127.0.0.1:0', log: silentLogger() })
  t.teardown(() => head.close({ abort: true }))
  await writeNodes(file, { schema: 1, nodes: { n1: { tokenSha256: digest(SITE) } } })
  t.equal(await head.reload(), false, 'refused at reload, the old file kept')
})
