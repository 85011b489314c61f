/**
 * The demo (README command 1) on real parts, checking it leaves nothing
 * behind. Other helpers use loop devices and mounts at the same time, so
 * before/after is compared only for what the demo made: its own /tmp/ba-demo-*
 * directory and its bdemo-* labels.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { command } from '../../agent/cli/demo.js'
import { silentLogger } from '../../agent/core/log.js'
import { gate } from '../helpers/capability.js'

const demoGate = gate('root', 'loop', 'squashfs-tools')

const loopsOf = (dir: string): string[] =>
  execFileSync('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE', '--raw'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir))
const mountsOf = (dir: string): string[] =>
  execFileSync('findmnt', ['-rn', '-o', 'TARGET'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(dir))
const labelled = (label: string): string[] => {
  try {
    return execFileSync('blkid', ['-c', '/dev/null', '-o', 'device', '-t', `LABEL=${label}`], { encoding: 'utf8' }).split('\n').filter(Boolean)
  } catch {
    return []
  }
}

const runDemo = async (abortWhen?: (line: string) => boolean) => {
  const lines: string[] = []
  const ac = new AbortController()
  const code = await command
    .run([], {
      log: silentLogger(),
      signal: ac.signal,
      out: (l) => {
        lines.push(l)
        if (abortWhen?.(l)) ac.abort(new Error('test interrupt'))
      },
    })
    .catch((e: unknown) => e)
  const text = lines.join('\n')
  const dir = /\/tmp\/ba-demo-[A-Za-z0-9]+/.exec(text)?.[0] ?? ''
  const labels = [...text.matchAll(/LABEL=(bdemo-[a-z]+-[0-9a-f]{4})/g)].map((m) => m[1] ?? '')
  return { code, text, dir, labels }
}

t.test('the demo boots cold (miss) then warm (hit) and leaves no loop device or mount behind', demoGate, async (t) => {
  const r = await runDemo()
  t.equal(r.code, 0, r.text)
  t.match(r.text, /boot 1 miss \(\d+ bytes fetched/)
  t.match(r.text, /boot 2 hit \(0 bytes fetched/)
  t.match(r.text, /local change discarded: yes/)
  // The stage delivered its events before the demo looked at the spool: say so, not "no events spooled".
  t.notMatch(r.text, /no events spooled/)
  t.match(r.text, /events\s+delivered by the boot stage itself: the head node holds [1-9]\d* event\(s\) for \S+ \(last boot: ok\)/)
  t.ok(r.dir, 'the demo said where it worked')
  t.same(loopsOf(r.dir), [], 'no loop device backed by the demo files')
  t.same(mountsOf(r.dir), [], 'no mount under the demo directory')
  t.equal(r.labels.length >= 2, true)
  for (const l of new Set(r.labels)) t.same(labelled(l), [], `no device carries ${l} any more`)
  t.match(r.text, /nothing left behind/)
})

t.test('interrupted half-way, the demo still removes what it made', demoGate, async (t) => {
  const r = await runDemo((l) => l.startsWith('== boot 1'))
  t.not(r.code, 0, 'an interrupted demo does not report success')
  t.ok(r.dir)
  t.same(loopsOf(r.dir), [])
  t.same(mountsOf(r.dir), [])
  t.match(r.text, /nothing left behind/)
})
