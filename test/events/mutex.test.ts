import t from 'tap'
import { Mutex } from '../../agent/events/mutex.js'

/** A promise and the function that settles it, to hold a critical section open. */
const gate = (): { open: () => void; opened: Promise<void> } => {
  let open = (): void => undefined
  const opened = new Promise<void>((r) => (open = r))
  return { open, opened }
}

t.test('runs never overlap and run in the order they were asked for', async (t) => {
  const m = new Mutex()
  const log: string[] = []
  const first = gate()
  const a = m.run(async () => {
    log.push('a start')
    await first.opened
    log.push('a end')
    return 'a'
  })
  const b = m.run(async () => {
    log.push('b start')
    log.push('b end')
    return 'b'
  })
  const c = m.run(async () => {
    log.push('c')
    return 'c'
  })
  await Promise.resolve()
  await Promise.resolve()
  t.same(log, ['a start'], 'b waits while a holds the mutex')
  first.open()
  t.same(await Promise.all([a, b, c]), ['a', 'b', 'c'])
  t.same(log, ['a start', 'a end', 'b start', 'b end', 'c'])
})

t.test('a run that fails hands its error to its caller only, and the next run still goes', async (t) => {
  const m = new Mutex()
  const failed = m.run(async () => {
    throw new Error('boom')
  })
  const next = m.run(async () => 'still runs')
  await t.rejects(failed, /boom/)
  t.equal(await next, 'still runs')
  t.equal(await m.run(async () => 42), 42)
})

t.test('a run that throws synchronously is a rejection, not a throw from run', async (t) => {
  const m = new Mutex()
  const p = m.run((() => {
    throw new Error('sync')
  }) as () => Promise<never>)
  await t.rejects(p, /sync/)
  t.equal(await m.run(async () => 'after'), 'after')
})
