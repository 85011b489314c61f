/**
 * Field checks as data: each payload field of an event is described once,
 * by a {@link Field}, and that one description both checks a value arriving
 * as `unknown` (naming the field that is wrong, the way the head node's
 * answers name it) and lists the field for docs/protocol.md's test.
 *
 * Every field is optional on the wire (protocol v1 stored events with any
 * subset of them); a field that is present must have its type. Fields not
 * described are kept as they are (v1: "others are stored and shown as they
 * are").
 */
import { isSha256 } from './names.js'

/** Why a value was refused: the field (a path such as `data.record.result`) and what is wrong with it. */
export interface Refusal {
  field: string
  problem: string
}

/** One field's type: its check, and the sub-fields it has (for the docs). */
export interface Field {
  /** `undefined` when `v` has the field's type; else the refusal naming `at` (or a field under it). */
  check(v: unknown, at: string): Refusal | undefined
  /** Sub-fields of an object (or of each element of an array of objects). */
  fields?: Readonly<Record<string, Field>>
  /** Set on an array: its element's fields are listed as `name[].sub`. */
  array?: boolean
}

/** A table of fields for the object type `T`: one entry per property, no more, no fewer. */
export type Shape<T> = { readonly [K in keyof T]-?: Field }

export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

const refuse = (field: string, problem: string): Refusal => ({ field, problem })

const simple = (ok: (v: unknown) => boolean, problem: string): Field => ({
  check: (v, at) => (ok(v) ? undefined : refuse(at, problem)),
})

/** A string of at most `max` characters. */
export const string = (max = 4096): Field => simple((v) => typeof v === 'string' && v.length <= max, `must be a string of at most ${max} characters`)

/** A non-negative safe integer (counts, sizes, sequence numbers, durations). */
export const count: Field = simple((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0, 'must be a non-negative integer')

/** A safe integer, negative allowed (a kernel errno). */
export const integer: Field = simple((v) => typeof v === 'number' && Number.isSafeInteger(v), 'must be an integer')

/** A finite number. */
export const number: Field = simple((v) => typeof v === 'number' && Number.isFinite(v), 'must be a number')

export const boolean: Field = simple((v) => typeof v === 'boolean', 'must be true or false')

/** A lower-case hex digest (sha256, or a chunk's or segment's digest). */
export const hexDigest: Field = simple((v) => typeof v === 'string' && /^[0-9a-f]{16,128}$/.test(v), 'must be a lower-case hex digest')

/** A lower-case hex sha256. */
export const sha256: Field = simple(isSha256, 'must be 64 lower-case hex digits')

/** An ISO-8601 time. */
export const time: Field = simple((v) => typeof v === 'string' && v.length <= 64 && !Number.isNaN(Date.parse(v)), 'must be an ISO-8601 time')

/** One of a few strings. */
export const oneOf = (...values: readonly string[]): Field =>
  simple(
    (v) => typeof v === 'string' && values.includes(v),
    values.length === 2 ? `must be "${values[0]}" or "${values[1]}"` : `must be one of ${values.map((x) => `"${x}"`).join(', ')}`,
  )

/** `null` or what `f` accepts. */
export const nullable = (f: Field): Field => ({ ...f, check: (v, at) => (v === null ? undefined : f.check(v, at)) })

/** Checks the fields of `fields` that `o` has; the others are left as they are. */
export const checkFields = (o: Record<string, unknown>, fields: Readonly<Record<string, Field>>, at: string): Refusal | undefined => {
  for (const [k, f] of Object.entries(fields)) {
    if (o[k] === undefined) continue
    const r = f.check(o[k], at ? `${at}.${k}` : k)
    if (r) return r
  }
  return undefined
}

/** An object; with `fields`, those of them it has are checked. */
export const object = <T>(fields?: Shape<T>): Field => ({
  check: (v, at) => (isRecord(v) ? (fields ? checkFields(v, fields, at) : undefined) : refuse(at, 'must be an object')),
  ...(fields ? { fields } : {}),
})

/** An array; with `item`, each element is checked (named `field[i]`). */
export const arrayOf = (item?: Field): Field => ({
  check: (v, at) => {
    if (!Array.isArray(v)) return refuse(at, 'must be an array')
    if (item) {
      for (let i = 0; i < v.length; i++) {
        const r = item.check(v[i], `${at}[${i}]`)
        if (r) return r
      }
    }
    return undefined
  },
  array: true,
  ...(item?.fields ? { fields: item.fields } : {}),
})

/** An object whose every value `value` accepts (a map such as `timings`). */
export const mapOf = (value: Field): Field => ({
  check: (v, at) => {
    if (!isRecord(v)) return refuse(at, 'must be an object')
    for (const [k, x] of Object.entries(v)) {
      const r = value.check(x, `${at}.${k}`)
      if (r) return r
    }
    return undefined
  },
})

/** Every field path a table describes, sub-fields as `a.b` and array elements' as `a[].b` (for the docs). */
export const fieldPaths = (fields: Readonly<Record<string, Field>>, prefix = ''): string[] =>
  Object.entries(fields).flatMap(([k, f]) => {
    const path = `${prefix}${k}`
    return [path, ...(f.fields ? fieldPaths(f.fields, `${path}${f.array ? '[]' : ''}.`) : [])]
  })
