/**
 * Runs the bundled CLI (dist/boot-agent.mjs) as operators do. `npm test`
 * bundles first; when a test file is run alone and the bundle is missing, it
 * is built here.
 */
import { execFile, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const BUNDLE = join(ROOT, 'dist', 'boot-agent.mjs')

export interface CliResult {
  status: number | null
  stdout: string
  stderr: string
}

/** Runs the bundle with `args`; `env` is added to this process's environment (a value of undefined removes the variable). */
export const runCli = (args: string[], opts: { cwd?: string; env?: Record<string, string | undefined> } = {}): CliResult => {
  if (!existsSync(BUNDLE)) spawnSync(process.execPath, [join(ROOT, 'scripts', 'bundle.mjs')], { cwd: ROOT, stdio: 'inherit' })
  const r = spawnSync(process.execPath, [BUNDLE, ...args], {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 256 * 1024 * 1024,
    env: Object.fromEntries(Object.entries({ ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn', ...opts.env }).filter(([, v]) => v !== undefined)),
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/**
 * {@link runCli} without blocking this process: for a CLI that talks to a
 * server this test runs in-process (a real head node started with startHead).
 */
export const runCliAsync = (args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<CliResult> =>
  new Promise((resolve) => {
    if (!existsSync(BUNDLE)) spawnSync(process.execPath, [join(ROOT, 'scripts', 'bundle.mjs')], { cwd: ROOT, stdio: 'inherit' })
    const env = Object.fromEntries(Object.entries({ ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn', ...opts.env }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv
    execFile(process.execPath, [BUNDLE, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }))
  })
