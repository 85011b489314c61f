// Runs the tap suite with TAP output, echoes it, and ends with the plain line
// `N passed, N failed, N skipped` that CI reads (tap's own summary is not read).
// Counts leaf assertions; a subtest that fails with no failing assertion inside
// (a crash, a timeout, a thrown error) counts as one failure, so none is hidden.
import { spawn } from 'node:child_process'
import { Parser } from 'tap-parser'

const args = ['tap', '-R', 'tap', '--no-color', ...process.argv.slice(2)]
const tally = { pass: 0, fail: 0, skip: 0, todo: 0 }
const failures = []

const attach = (parser, path) => {
  const state = { fails: 0 }
  let pending
  parser.on('child', (child) => {
    pending = attach(child, [...path, child.name])
  })
  parser.on('assert', (res) => {
    if (pending) {
      const inner = pending.fails
      pending = undefined
      state.fails += inner
      if (res.skip) tally.skip++
      else if (!res.ok && !res.todo && inner === 0) {
        tally.fail++
        state.fails++
        failures.push([...path, res.name].join(' > '))
      }
      return
    }
    if (res.todo) tally.todo++
    else if (res.skip) tally.skip++
    else if (res.ok) tally.pass++
    else {
      tally.fail++
      state.fails++
      failures.push([...path, res.name].join(' > '))
    }
  })
  return state
}

const parser = new Parser()
attach(parser, [])
const child = spawn('npx', args, { stdio: ['ignore', 'pipe', 'inherit'] })
child.stdout.on('data', (d) => {
  process.stdout.write(d)
  parser.write(d)
})
const code = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)))
parser.end()
if (failures.length) {
  process.stdout.write('\nfailed:\n' + failures.map((f) => `  - ${f}`).join('\n') + '\n')
}
if (code !== 0 && tally.fail === 0) {
  // tap itself failed (bad config, no test files): that is a failure too.
  tally.fail++
  process.stdout.write(`\ntap exited ${code} with no failing assertion\n`)
}
process.stdout.write(`\n${tally.pass} passed, ${tally.fail} failed, ${tally.skip} skipped\n`)
process.exitCode = tally.fail > 0 ? 1 : 0
