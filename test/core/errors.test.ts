// The one closed set of error codes (agent/core/errors.ts ERROR_CODES), held
// to the documents that promise codes to operators and to the head's clients,
// and to the sources: every code means something, every documented code is in
// the set, and nothing under agent/ throws a plain Error without a code.
import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BootAgentError, ERROR_CODES, type ErrorCode, foreignCode, isErrorCode } from '../../agent/core/errors.js'
import { DEFAULT_RETRY_POLICY, isRetryable } from '../../agent/core/retry.js'
import { HTTP_PROBLEM_CODES, HttpProblem } from '../../agent/head/http-util.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const read = (path: string): string => readFileSync(join(root, path), 'utf8')
const codes = Object.keys(ERROR_CODES) as ErrorCode[]

/**
 * Files under agent/ allowed to build a plain `new Error(`, with the reason.
 * Keyed by path relative to agent/.
 */
const PLAIN_ERROR_EXCEPTIONS: Record<string, string> = {
  'hash/jobs.ts':
    "its functions run as source text on the hash pool's worker threads (hash/pool.ts), where nothing can be imported; " +
    'the error it builds carries code EBADSIZE and hash/ranges.ts rewraps it as a BootAgentError',
}

/** Rows of the first markdown table after the line matching `after`, as arrays of cells. */
const tableAfter = (text: string, after: RegExp): string[][] => {
  const lines = text.split('\n')
  let i = lines.findIndex((l) => after.test(l))
  if (i < 0) throw new Error(`no line matches ${after}`)
  while (i < lines.length && !lines[i]!.startsWith('|')) i++
  const rows: string[][] = []
  for (i += 2; i < lines.length && lines[i]!.startsWith('|'); i++) rows.push(lines[i]!.split('|').slice(1, -1).map((c) => c.trim()))
  return rows
}

/** The backquoted code-like words of a table cell (`EIDLE`, `CERT_…`). */
const codesIn = (cell: string): string[] => [...cell.matchAll(/`([A-Z][A-Z0-9_]*…?)`/g)].map((m) => m[1]!)

/** Every .ts file under agent/. */
const sources = (dir: string = join(root, 'agent')): string[] =>
  readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : []
  })

t.test('every code in the set is E and capitals, with a one-line meaning for an operator', async (t) => {
  t.ok(codes.length > 30, `${codes.length} codes`)
  for (const c of codes) {
    t.match(c, /^E[A-Z]+$/, c)
    const meaning: string = ERROR_CODES[c]
    t.ok(meaning.length >= 20 && !meaning.includes('\n') && !meaning.includes('|'), `${c} says what it means on one line`)
  }
  t.same(codes, [...codes].sort(), 'listed in alphabetical order, so a reader finds one')
})

t.test('a BootAgentError carries a code of the set, or a wrapped network error\'s own code', async (t) => {
  t.ok(isErrorCode('EINTEGRITY'))
  t.notOk(isErrorCode('ECONNREFUSED'), "Node's errno is not ours")
  t.notOk(isErrorCode('toString'), 'only own keys count')
  const wrapped = new BootAgentError(foreignCode('ECONNREFUSED'), 'http://x: connect ECONNREFUSED')
  t.equal(wrapped.code, 'ECONNREFUSED', 'kept as it was')
  t.equal(isRetryable(wrapped), true, 'so the retry policy reads it')
  t.equal(isRetryable(new BootAgentError(foreignCode('CERT_HAS_EXPIRED'), 'x')), false, 'and a TLS code stays final')
})

t.test("the head's problem codes are a subset of the set, and docs/protocol.md names only those", async (t) => {
  for (const c of HTTP_PROBLEM_CODES) t.ok(isErrorCode(c), c)
  t.equal(new HttpProblem(400, 'EABORT', 'client aborted the request body').code, 'EABORT', 'one code for an aborted operation, head or node')
  const rows = tableAfter(read('docs/protocol.md'), /^\| status \| code \| when \|$/)
  const documented = rows.flatMap((r) => codesIn(r[1] ?? ''))
  t.ok(documented.length >= 15, `${documented.length} codes in the table`)
  for (const c of documented) t.ok((HTTP_PROBLEM_CODES as readonly string[]).includes(c), `${c} (docs/protocol.md) is a problem code of the head`)
})

t.test("every code in docs/cache.md's error table is in the set, or a family of Node's/OpenSSL's codes the retry policy names", async (t) => {
  const rows = tableAfter(read('docs/cache.md'), /^## Errors \(stable codes\)/)
  // A parenthesis says which case of a code a row is about (`ECONFIG` (`BOOT_AGENT_CA`)): not a code.
  const documented = rows.flatMap((r) => codesIn((r[0] ?? '').replace(/\([^)]*\)/g, '')))
  t.ok(documented.length >= 12, `${documented.length} codes in the table`)
  const policy = DEFAULT_RETRY_POLICY
  for (const c of documented) {
    if (c.endsWith('…')) {
      const prefix = c.slice(0, -1)
      t.ok(policy.finalCodePrefixes.includes(prefix), `${c}: a foreign family the retry policy names (final)`)
    } else if (isErrorCode(c)) t.pass(`${c} is in the set`)
    else t.ok(policy.finalCodePrefixes.some((p) => c.startsWith(p)), `${c}: not ours, a TLS code the retry policy treats as final`)
  }
})

t.test('docs/errors.md lists exactly the set, each with its meaning word for word', async (t) => {
  const rows = tableAfter(read('docs/errors.md'), /^\| Code \| Meaning \|/)
  const listed = rows.map((r) => codesIn(r[0] ?? '')[0])
  t.same(listed, codes, 'the same codes, in the same order')
  for (const r of rows) {
    const c = codesIn(r[0] ?? '')[0] as ErrorCode
    if (isErrorCode(c)) t.equal(r[1], ERROR_CODES[c], `${c}: meaning`)
    t.ok((r[2] ?? '').length > 0, `${c}: says who raises it`)
  }
})

t.test('every code of the set is raised or reported somewhere in agent/ (no dead codes)', async (t) => {
  const errorsTs = read('agent/core/errors.ts')
  const withoutSet = errorsTs.slice(0, errorsTs.indexOf('export const ERROR_CODES')) + errorsTs.slice(errorsTs.indexOf('} as const'))
  const text = sources()
    .filter((p) => !p.endsWith(join('core', 'errors.ts')))
    .map((p) => readFileSync(p, 'utf8'))
    .concat(withoutSet)
    .join('\n')
  for (const c of codes) t.ok(text.includes(`'${c}'`), `${c} appears as a literal`)
})

t.test('no source under agent/ throws a plain new Error( (each thrown error carries a code)', async (t) => {
  const found: string[] = []
  for (const p of sources()) {
    const rel = relative(join(root, 'agent'), p)
    readFileSync(p, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (/\bnew Error\(/.test(line) && !PLAIN_ERROR_EXCEPTIONS[rel]) found.push(`agent/${rel}:${i + 1}: ${line.trim()}`)
      })
  }
  t.same(found, [], 'a BootAgentError (or a subclass) with a code from ERROR_CODES instead')
  for (const rel of Object.keys(PLAIN_ERROR_EXCEPTIONS)) {
    t.match(read(join('agent', rel)), /\bnew Error\(/, `the exception agent/${rel} still needs its exemption`)
  }
})
