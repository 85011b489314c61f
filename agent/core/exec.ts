/**
 * Runs external tools with argument arrays, never through a shell (SPEC §12),
 * with a deadline and an abort signal.
 */
import { spawn } from 'node:child_process'
import { constants } from 'node:fs'
import { access, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { BootAgentError, CommandError } from './errors.js'

export interface RunOptions {
  /** Kill the command after this many milliseconds. Default 10 minutes. */
  timeoutMs?: number
  /** Abort the command (SIGTERM, then SIGKILL after 2 s). */
  signal?: AbortSignal
  /** Bytes written to the command's standard input. */
  input?: string | Buffer
  /** Do not throw on a non-zero exit; the caller inspects `exitCode`. */
  allowFailure?: boolean
  /** Called with each chunk of standard error (for progress lines). */
  onStderr?: (chunk: string) => void
  env?: NodeJS.ProcessEnv
  cwd?: string
}

export interface RunResult {
  exitCode: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

const DEFAULT_TIMEOUT_MS = 10 * 60_000
const KILL_GRACE_MS = 2_000
/** Output kept per stream; a runaway tool cannot exhaust memory. */
const MAX_CAPTURE_BYTES = 16 * 1024 * 1024

/** A function with the shape of {@link run}, so a test can script one. */
export type Runner = (command: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>

export const run: Runner = (command, args, opts = {}) =>
  new Promise<RunResult>((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new BootAgentError('EABORT', `${command} not started: aborted`, { command }, { cause: opts.signal.reason }))
      return
    }
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_CAPTURE_BYTES) stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_CAPTURE_BYTES) stderr += d
      opts.onStderr?.(d)
    })
    const kill = (): void => {
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS).unref()
    }
    const timer = setTimeout(() => {
      timedOut = true
      kill()
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS)
    const onAbort = (): void => kill()
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    child.on('error', (err) => {
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      reject(new BootAgentError('ECOMMAND', `cannot run ${command}: ${err.message}`, { command, args }, { cause: err }))
    })
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      if (timedOut) {
        reject(new BootAgentError('ETIMEOUT', `${command} did not finish within ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`, { command, args }))
        return
      }
      if (opts.signal?.aborted) {
        reject(new BootAgentError('EABORT', `${command} aborted`, { command, args }, { cause: opts.signal.reason }))
        return
      }
      if (exitCode !== 0 && !opts.allowFailure) {
        reject(new CommandError({ command, args, exitCode, signal, stderr }))
        return
      }
      resolve({ exitCode, signal, stdout, stderr })
    })
    child.stdin.on('error', () => {
      /* the tool may exit before reading its input; its exit status says what happened */
    })
    child.stdin.end(opts.input ?? '')
  })

/**
 * Where `command` would be run from: itself when it names a path, else the
 * first executable of that name on PATH; undefined when there is none. For a
 * check at start, so a missing tool is named before it is first needed.
 */
export const commandPath = async (command: string, path = process.env.PATH ?? ''): Promise<string | undefined> => {
  const candidates = command.includes('/') ? [command] : path.split(':').filter(Boolean).map((d) => join(d, command))
  for (const c of candidates) {
    if (await access(c, constants.X_OK).then(() => stat(c).then((st) => st.isFile()), () => false)) return c
  }
  return undefined
}
