/**
 * agent/daemon/event-lines.ts: the journal line of each event an administrator
 * should hear of: the level `journalctl -p` filters on, a sentence first, and
 * the fields a script reads from `journalctl -o json` after it.
 */
import t from 'tap'
import { eventLine } from '../../agent/daemon/event-lines.js'
import { makeEvent } from '../../agent/protocol/event.js'
import { prose } from '../../agent/core/log-format.js'

const SHA = 'ab12cd34ef56'.padEnd(64, '0')

t.test('an integrity failure is an error, in prose, with image, device, node and the event id as facts', async (t) => {
  const e = makeEvent('integrity', 'n01', { source: 'self-check', what: 'cache-object', action: 'marked-corrupt' } as never, { image: { sha256: SHA, name: 'compute-v7' } })
  const line = eventLine(e)!
  t.equal(line.level, 'error')
  t.equal(prose({ msg: line.msg, ...line.fields }),
    `integrity failure: image compute-v7 (sha256:ab12cd34ef56) (node n01); marked-corrupt event=${e.id} kind=integrity node=n01 image=sha256:${SHA} imageName=compute-v7 action=marked-corrupt`)
})

t.test('squashfs and I/O errors are errors with the device and the count of a coalesced flood', async (t) => {
  const e = makeEvent('squashfs-error', 'n01', { device: 'loop3', count: 12, message: 'SQUASHFS error: …' }, { image: { sha256: SHA } })
  const line = eventLine(e)!
  t.equal(line.level, 'error')
  t.equal(line.msg, 'squashfs error: image sha256:ab12cd34ef56 on loop3 (node n01), 12 times')
  t.match(line.fields, { kind: 'squashfs-error', device: 'loop3', count: 12, image: `sha256:${SHA}` })
  t.equal(eventLine(makeEvent('io-error', 'n01', { device: 'sda', count: 1 }))!.msg, 'block I/O error: no known image on sda (node n01)')
})

t.test('fallbacks and losses are warnings; heartbeats and good self-checks are not news', async (t) => {
  t.equal(eventLine(makeEvent('fallback', 'n01', {} as never))!.level, 'warn')
  t.equal(eventLine(makeEvent('lost', 'n01', {} as never))!.level, 'warn')
  t.equal(eventLine(makeEvent('status', 'n01', {} as never)), undefined)
  t.equal(eventLine(makeEvent('cache', 'n01', { action: 'verified' } as never)), undefined)
})

t.test('a loss says how many records of what were lost, and why', async (t) => {
  const line = eventLine(makeEvent('lost', 'n01', { source: 'kmsg', count: 9434, reason: 'overwritten before the daemon first read' }))!
  t.equal(line.msg, 'lost 9434 kmsg record(s) (node n01): overwritten before the daemon first read')
  t.match(line.fields, { kind: 'lost', count: 9434, source: 'kmsg' })
})
