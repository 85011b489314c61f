/**
 * A process racing for locks, for test/core/lock.test.ts. Reads commands on
 * stdin, one a line: `go <path>` tries once to take the lock (no wait: a live
 * holder is ELOCKED at once) and answers `won` or `locked`; `release`
 * releases what it holds and answers `released`.
 */
import { createInterface } from 'node:readline'
import { acquireLock, type Lock } from '../../agent/core/lock.js'

let held: Lock | undefined
const say = (s: string): void => void process.stdout.write(s + '\n')

for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, path = ''] = line.split(' ')
  if (cmd === 'go') {
    try {
      held = await acquireLock(path, { timeoutMs: 0, pollMs: 5 })
      say('won')
    } catch (e) {
      say((e as { code?: string }).code === 'ELOCKED' ? 'locked' : `error ${String(e)}`)
    }
  } else if (cmd === 'release') {
    await held?.release()
    held = undefined
    say('released')
  }
}
