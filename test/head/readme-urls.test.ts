/**
 * The head-node URLs the docs show (README, docs/operations.md) are routes the
 * reference head serves (issue #21: the README's example fetched
 * http://head:8080/CPE-base.manifest.json, which the head answers 404).
 * Every `http(s)://head:PORT/...` in the docs goes through the head's own
 * route table.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { HttpProblem } from '../../agent/head/http-util.js'
import { parseTarget, Router } from '../../agent/head/router.js'
import { type HeadHandlers, headRoutes } from '../../agent/head/routes.js'

const ROOT = join(import.meta.dirname, '../..')
const DOCS = ['README.md', 'docs/operations.md'].filter((f) => existsSync(join(ROOT, f)))

// Every handler the table has, whatever helpers add: a proxy answers each name with itself.
const handlers = new Proxy({}, { get: (_, name) => String(name) }) as HeadHandlers<string>
const router = new Router(headRoutes(handlers))

t.test('every head URL in the docs is a route of the reference head', async (t) => {
  const urls = DOCS.flatMap((f) => [...readFileSync(join(ROOT, f), 'utf8').matchAll(/https?:\/\/head:\d+(\/[^\s'"`)|\]]*)/g)].map((m) => ({ file: f, path: m[1]! })))
  t.ok(urls.length >= 3, `the docs show head URLs (${urls.length})`)
  for (const { file, path } of urls) {
    // Placeholders in the docs stand for a real node id or digest.
    const concrete = path.replace(/\$NODE|\bNODE\b/g, 'n0001').replace(/\bSHA256\b|\$SHA/g, 'ab'.repeat(32))
    let found: string
    try {
      found = router.match('GET', parseTarget(concrete)).route.name
    } catch (e) {
      found = e instanceof HttpProblem ? `${e.status} ${e.message}` : String(e)
    }
    t.notMatch(found, /^\d{3} /, `${file}: ${path} → ${found}`)
  }
})
