import t from 'tap'
import { makeEvent } from '../../agent/protocol/event.js'
import { parseEventBatch } from '../../agent/head/validate-events.js'

const caught = (fn: () => unknown): unknown => {
  try {
    fn()
  } catch (e) {
    return e
  }
  return undefined
}

t.test('a valid batch is returned with in-batch repeats kept once', async (t) => {
  const e = makeEvent('integrity', 'n1', { expected: 'a'.repeat(64), found: 'b'.repeat(64), url: 'http://h/x', chunk: 3 }, { image: { name: 'CPE-base', sha256: 'a'.repeat(64) } })
  t.same(parseEventBatch({ events: [e, e] }, 'n1'), [e])
})

t.test('every bad field is named', async (t) => {
  const ok = makeEvent('status', 'n1', {})
  const cases: Array<[unknown, string]> = [
    [null, 'body'],
    [{ events: {} }, 'events'],
    [{ events: [1] }, 'events[0]'],
    [{ events: [{ ...ok, id: '' }] }, 'events[0].id'],
    [{ events: [{ ...ok, id: 'a/b' }] }, 'events[0].id'],
    [{ events: [{ ...ok, kind: 'x' }] }, 'events[0].kind'],
    [{ events: [{ ...ok, node: 'n2' }] }, 'events[0].node'],
    [{ events: [{ ...ok, time: 'yesterday' }] }, 'events[0].time'],
    [{ events: [{ ...ok, data: [] }] }, 'events[0].data'],
    [{ events: [{ ...ok, image: { name: '../x' } }] }, 'events[0].image.name'],
    [{ events: [{ ...ok, extra: 1 }] }, 'events[0].extra'],
    [{ events: [ok, { ...makeEvent('integrity', 'n1', { found: 'XYZ' }) }] }, 'events[1].data.found'],
    [{ events: [makeEvent('lost', 'n1', { count: -1 })] }, 'events[0].data.count'],
  ]
  for (const [body, field] of cases) {
    t.match(caught(() => parseEventBatch(body, 'n1')), { name: 'HttpProblem', status: 400, details: { field } }, field)
  }
})

t.test('too many or too large events are 413', async (t) => {
  const many = Array.from({ length: 11 }, () => makeEvent('status', 'n1', {}))
  t.match(caught(() => parseEventBatch({ events: many }, 'n1', { maxEventsPerBatch: 10, maxEventBytes: 1000 })), { status: 413, code: 'ETOOMANY' })
  t.match(caught(() => parseEventBatch({ events: [makeEvent('status', 'n1', { hostname: 'x'.repeat(2000) })] }, 'n1', { maxEventsPerBatch: 10, maxEventBytes: 1000 })), { code: 'ETOOLARGE', status: 413 })
})
