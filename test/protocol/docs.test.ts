/**
 * docs/protocol.md is checked against the protocol's types: every event kind
 * and every payload field in agent/protocol/ must be in the doc, and the doc
 * must list none they do not have. The doc's format: under "#### Event
 * payloads", one "##### `kind`, `kind`" heading per payload, then a table
 * whose first column is the field path in backticks; the envelope table's
 * `kind` row lists the kinds, and its rows the envelope's fields.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { ENVELOPE_FIELDS, EVENT_KINDS } from '../../agent/protocol/event.js'
import { PAYLOAD_FIELDS } from '../../agent/protocol/payloads.js'
import { fieldPaths } from '../../agent/protocol/fields.js'

const doc = await readFile(new URL('../../docs/protocol.md', import.meta.url), 'utf8')

/** The backticked first cells of the table rows in `text`. */
const rowFields = (text: string): string[] => [...text.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1] ?? '')

/** Per kind named in a payload heading, the fields its table lists. */
const documented = (): Map<string, string[]> => {
  const start = doc.indexOf('#### Event payloads')
  const end = doc.indexOf('\n### ', start)
  const section = doc.slice(start, end === -1 ? undefined : end)
  const out = new Map<string, string[]>()
  for (const part of section.split(/^##### /m).slice(1)) {
    const heading = part.slice(0, part.indexOf('\n'))
    const fields = rowFields(part)
    for (const m of heading.matchAll(/`([^`]+)`/g)) {
      const kind = m[1] ?? ''
      if (out.has(kind)) t.fail(`${kind} has two sections`)
      out.set(kind, fields)
    }
  }
  return out
}

t.test('every event kind has a payload section, and the doc has no kind the types lack', async (t) => {
  const kinds = documented()
  t.ok(kinds.size > 0, 'the payload sections are found')
  t.same([...kinds.keys()].sort(), [...EVENT_KINDS].sort())
})

t.test('each payload section lists exactly the fields of its type', async (t) => {
  const kinds = documented()
  for (const kind of EVENT_KINDS) {
    const want = fieldPaths(PAYLOAD_FIELDS[kind]).sort()
    const have = [...(kinds.get(kind) ?? [])].sort()
    t.same(have.filter((f) => !want.includes(f)), [], `${kind}: no field in the doc that the type lacks`)
    t.same(want.filter((f) => !have.includes(f)), [], `${kind}: every field of the type is in the doc`)
  }
})

t.test('the envelope table lists the envelope fields and every kind', async (t) => {
  const start = doc.indexOf('**Event** (agent/protocol/event.ts)')
  t.ok(start > 0, 'the envelope table is found')
  const table = doc.slice(start, doc.indexOf('\n\n', doc.indexOf('|', start)))
  t.same(rowFields(table), [...ENVELOPE_FIELDS])
  const kindRow = table.split('\n').find((l) => l.startsWith('| `kind` |')) ?? ''
  const listed = [...(kindRow.split('|')[3] ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1])
  t.same(listed, [...EVENT_KINDS])
})

t.test('a field missing from the doc, or one too many, is caught', async (t) => {
  // The check itself: the table parser reads what a section holds.
  t.same(rowFields('| field | type |\n|---|---|\n| `a` | x |\n| `a.b` | y |\n'), ['a', 'a.b'])
  t.notSame(fieldPaths(PAYLOAD_FIELDS.lost).sort(), [...(documented().get('lost') ?? []), 'extra'].sort())
})
