import t from 'tap'
import { join } from 'node:path'
import { CommandError } from '../../agent/core/errors.js'
import { run } from '../../agent/core/exec.js'
import { pidAlive } from '../../agent/core/lock.js'
import { waitUntil } from '../helpers/wait.js'
import { readFile } from 'node:fs/promises'

const node = process.execPath

t.test('a command\'s output, exit code and input: arguments passed as an array, never through a shell', async (t) => {
  const r = await run(node, ['-e', 'process.stdin.pipe(process.stdout); console.error("to stderr")', '$HOME; echo hi'], { input: 'fed in' })
  t.same(r, { exitCode: 0, signal: null, stdout: 'fed in', stderr: 'to stderr\n' })
  const args = await run(node, ['-e', 'console.log(JSON.stringify(process.argv.slice(1)))', '$HOME', '`id`', 'a b'])
  t.same(JSON.parse(args.stdout), ['$HOME', '`id`', 'a b'], 'no expansion')
})

t.test('a non-zero exit is a CommandError naming the command, its exit code and the last lines of stderr', async (t) => {
  const err = await run(node, ['-e', 'for (const l of ["one","two","three","four"]) console.error(l); process.exit(3)']).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof CommandError)
  const e = err as CommandError
  t.equal(e.code, 'ECOMMAND')
  t.equal(e.exitCode, 3)
  t.equal(e.command, node)
  t.equal(e.stderr, 'one\ntwo\nthree\nfour\n', 'the whole stderr is kept on the error')
  t.match(e.message, /exited 3: two \| three \| four$/, 'the message carries the last three lines')
})

t.test('allowFailure returns the exit code instead of throwing', async (t) => {
  const r = await run(node, ['-e', 'process.exit(7)'], { allowFailure: true })
  t.equal(r.exitCode, 7)
})

t.test('a command killed by a signal says so', async (t) => {
  await t.rejects(run(node, ['-e', 'process.kill(process.pid, "SIGKILL")']), { code: 'ECOMMAND', exitCode: null, message: /killed by SIGKILL/ })
})

t.test('a command that cannot be started is ECOMMAND with the cause', async (t) => {
  await t.rejects(run('/nonexistent/tool', []), { code: 'ECOMMAND', message: /cannot run \/nonexistent\/tool/ })
})

t.test('aborting kills the child and rejects with EABORT; an already aborted signal starts nothing', async (t) => {
  const dir = t.testdir()
  const pidFile = join(dir, 'pid')
  const ac = new AbortController()
  const p = run(node, ['-e', `require("fs").writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setInterval(() => {}, 1000)`], { signal: ac.signal })
  const pid = Number(await waitUntil('the child to write its pid', () => readFile(pidFile, 'utf8').catch(() => '')))
  t.ok(pidAlive(pid))
  ac.abort()
  await t.rejects(p, { code: 'EABORT' })
  t.equal(pidAlive(pid), false, 'the child is gone')
  const pre = new AbortController()
  pre.abort()
  await t.rejects(run(node, ['-e', `require("fs").writeFileSync(${JSON.stringify(join(dir, 'ran'))}, "")`], { signal: pre.signal }), { code: 'EABORT', message: /not started/ })
  await t.rejects(readFile(join(dir, 'ran')), { code: 'ENOENT' }, 'the command never ran')
})

t.test('a command past its deadline is killed and rejects with ETIMEOUT (ours: not the network errno the retry policy retries)', async (t) => {
  await t.rejects(run(node, ['-e', 'setInterval(() => {}, 1000)'], { timeoutMs: 200 }), { code: 'ETIMEOUT', message: /within 200 ms/ })
})

t.test('onStderr sees stderr as it comes; env and cwd are the ones given', async (t) => {
  const dir = t.testdir()
  const seen: string[] = []
  const r = await run(node, ['-e', 'console.error("progress"); console.log(process.env.ONLY_THIS + " " + process.cwd())'], {
    env: { ONLY_THIS: 'set' },
    cwd: dir,
    onStderr: (c) => seen.push(c),
  })
  t.equal(seen.join(''), 'progress\n')
  t.equal(r.stdout.trim(), `set ${dir}`)
})

t.test('a tool that exits without reading its input is not an error about the input', async (t) => {
  const r = await run(node, ['-e', 'process.exit(0)'], { input: Buffer.alloc(4 << 20) })
  t.equal(r.exitCode, 0)
})
