/**
 * Generators and checks shared by the fuzz campaigns (docs/reliability.md):
 * structure-aware inputs made by mutating a valid document (a value
 * replaced, removed, duplicated, a key added, a string or the serialised
 * text edited) mixed with raw strings and values, all from fast-check with a
 * fixed seed so that a failure names the seed and the path that reproduce it.
 */
import fc from 'fast-check'
import { performance } from 'node:perf_hooks'
import { BootAgentError } from '../../agent/core/errors.js'

/** Inputs per parser (issue #22: at least 100,000 each). */
export const FUZZ_RUNS = 100_000

/** Longest one parser call may take before the campaign calls it a hang (generous: the machine is shared). */
export const HANG_MS = 2_000

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }
type Path = (string | number)[]

/** Every path into `v` (the root included). */
const pathsOf = (v: unknown, at: Path = [], out: Path[] = []): Path[] => {
  out.push(at)
  if (Array.isArray(v)) v.forEach((c, i) => pathsOf(c, [...at, i], out))
  else if (v !== null && typeof v === 'object') for (const [k, c] of Object.entries(v)) pathsOf(c, [...at, k], out)
  return out
}

/** Values that have broken parsers before: wrong types, edges of numbers, prototype names, huge and odd strings. */
const nasty = fc.constantFrom<unknown>(
  null, true, false, 0, -0, -1, 1, 0.5, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e308, -1e308, Number.NaN, Infinity, -Infinity,
  '', ' ', '0', '-1', '1e3', 'x'.repeat(5000), '\u0000', '\n', '../..', '/', '__proto__', 'constructor', 'toString', 'hasOwnProperty',
  [], {}, [null], { __proto__: null }, JSON.parse('{"__proto__": {"polluted": 1}}'),
)

/** A replacement value: any JSON value, a nasty one, or a string. */
export const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: nasty },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer() },
)

type Edit =
  | { op: 'replace'; at: number; value: unknown }
  | { op: 'delete'; at: number }
  | { op: 'add-key'; at: number; key: string; value: unknown }
  | { op: 'string-edit'; at: number; pos: number; text: string; cut: number }
  | { op: 'duplicate'; at: number; pos: number }

const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ op: fc.constant('replace' as const), at: fc.nat(), value: anyValue }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('add-key' as const), at: fc.nat(), key: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__proto__', 'constructor', 'schema', 'x')), value: anyValue }),
  fc.record({ op: fc.constant('string-edit' as const), at: fc.nat(), pos: fc.nat(), text: fc.string({ unit: 'binary', maxLength: 8 }), cut: fc.nat({ max: 8 }) }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), pos: fc.nat() }),
)

const clone = <T>(v: T): T => structuredClone(v)

const applyEdit = (doc: unknown, e: Edit): unknown => {
  const root = { v: clone(doc) } as Record<string, unknown>
  const paths = pathsOf(root.v)
  const path: Path = ['v', ...paths[e.at % paths.length]!]
  const parent = path.slice(0, -1).reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], root) as Record<string | number, unknown>
  const key = path[path.length - 1]!
  const cur = parent[key]
  switch (e.op) {
    case 'replace':
      parent[key] = e.value
      break
    case 'delete':
      if (Array.isArray(parent)) parent.splice(key as number, 1)
      else delete parent[key]
      break
    case 'add-key':
      if (cur !== null && typeof cur === 'object' && !Array.isArray(cur)) Object.defineProperty(cur, e.key, { value: e.value, enumerable: true, writable: true, configurable: true })
      else if (Array.isArray(cur)) cur.push(e.value)
      else parent[key] = e.value
      break
    case 'string-edit':
      if (typeof cur === 'string') {
        const p = e.pos % (cur.length + 1)
        parent[key] = cur.slice(0, p) + e.text + cur.slice(p + e.cut)
      } else if (typeof cur === 'number') parent[key] = cur + (e.pos % 3) - 1
      break
    case 'duplicate':
      if (Array.isArray(parent)) parent.splice(key as number, 0, clone(cur))
      else if (Array.isArray(cur) && cur.length) cur.push(clone(cur[e.pos % cur.length]))
      break
  }
  return root.v
}

/** `docs` (valid documents) with one to three edits each. */
export const mutatedDoc = (docs: readonly unknown[]): fc.Arbitrary<unknown> =>
  fc.tuple(fc.constantFrom(...docs), fc.array(edit, { minLength: 1, maxLength: 3 })).map(([d, edits]) => edits.reduce(applyEdit, d))

/** A document's JSON text with one to three character edits (a cut, an insertion, a changed character). */
export const mutatedText = (texts: readonly string[]): fc.Arbitrary<string> =>
  fc
    .tuple(fc.constantFrom(...texts), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 4 }), fc.string({ unit: 'binary', maxLength: 4 })), { minLength: 1, maxLength: 3 }))
    .map(([t, edits]) => edits.reduce((s, [pos, cut, ins]) => {
      const p = pos % (s.length + 1)
      return s.slice(0, p) + ins + s.slice(p + cut)
    }, t))

export interface Tally {
  inputs: number
  accepted: number
  refused: number
  slowestMs: number
}

/**
 * Calls `parse(input)` and judges the outcome: a return is accepted (and
 * `onValue` may check it), a throw must be a BootAgentError of one of
 * `codes` whose message names a field (`namesField` says how). Anything
 * else, or a call over {@link HANG_MS}, throws so fast-check shrinks it.
 */
export const judge = <I, O>(
  tally: Tally,
  parse: (input: I) => O,
  opts: { codes: readonly string[]; namesField: (e: BootAgentError, input: I) => boolean; onValue?: (v: O, input: I) => void },
) => (input: I): void => {
  tally.inputs++
  const t0 = performance.now()
  let out: { ok: true; v: O } | { ok: false; e: unknown }
  try {
    out = { ok: true, v: parse(input) }
  } catch (e) {
    out = { ok: false, e }
  }
  const ms = performance.now() - t0
  if (ms > tally.slowestMs) tally.slowestMs = ms
  if (ms > HANG_MS) throw new Error(`one input took ${ms.toFixed(0)} ms (> ${HANG_MS} ms): a hang`)
  if (out.ok) {
    tally.accepted++
    opts.onValue?.(out.v, input)
    return
  }
  const e = out.e
  if (!(e instanceof BootAgentError)) throw new Error(`crash: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`)
  if (!opts.codes.includes(e.code)) throw new Error(`refusal with an unexpected code ${e.code}: ${e.message}`)
  if (!opts.namesField(e, input)) throw new Error(`refusal does not name the field: ${e.code} ${e.message}`)
  tally.refused++
}

export const newTally = (): Tally => ({ inputs: 0, accepted: 0, refused: 0, slowestMs: 0 })

export type { Json }
