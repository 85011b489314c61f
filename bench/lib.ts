/**
 * Small helpers for benchmarks: run a command, time it, take the median of
 * several runs, measure peak RSS (GNU time's %M), and format ratios.
 *
 * Benchmarks compare against a native tool or baseline timed in the same run:
 * absolute figures on this shared machine are noisy, ratios are what we keep.
 */
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface Timed {
  seconds: number
  /** Peak resident set size in KiB, when measured. */
  maxRssKiB?: number
  stdout: string
}

/** Runs a command (argument array, no shell) and returns its wall time; throws on failure. */
export const timeCommand = (cmd: string, args: string[], opts: { rss?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<Timed> =>
  new Promise((resolve, reject) => {
    const argv = opts.rss ? ['-f', '__RSS__%M', cmd, ...args] : args
    const bin = opts.rss ? '/usr/bin/time' : cmd
    const started = process.hrtime.bigint()
    const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      if (code !== 0) {
        reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`))
        return
      }
      const m = /__RSS__(\d+)/.exec(stderr)
      resolve({ seconds, stdout, ...(m?.[1] ? { maxRssKiB: Number(m[1]) } : {}) })
    })
  })

/**
 * The environment the bundled agent is timed in: the one a node starts it
 * with, quiet (BOOT_AGENT_LOG_LEVEL=warn). The dracut hook and the systemd
 * units set no NODE_EXTRA_CA_CERTS (the agent reads a site CA itself, at its
 * first https request: agent/transport/trust.ts), but a developer's shell may
 * export one. This machine's names Debian's whole bundle (144 certificates),
 * which Node 20 parses at the start of every process: ~70 ms before the
 * agent's first line, against a 0.45 s `xxhsum`. It is dropped here, and
 * {@link caStartupNote} reports what it would have cost.
 */
export const agentEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, BOOT_AGENT_LOG_LEVEL: 'warn', ...extra }
  delete env.NODE_EXTRA_CA_CERTS
  return env
}

/**
 * When this shell sets NODE_EXTRA_CA_CERTS: a line saying so and what it adds
 * to Node's start-up, `node -e ''` with and without it timed alternately now.
 */
export const caStartupNote = async (runs = 9): Promise<string | undefined> => {
  const file = process.env.NODE_EXTRA_CA_CERTS
  if (!file) return undefined
  const bare = (env: NodeJS.ProcessEnv) => async () => (await timeCommand(process.execPath, ['-e', ''], { env })).seconds
  const r = await compare(runs, bare(agentEnv()), bare(process.env))
  const ms = (s: number) => (s * 1000).toFixed(0)
  return (
    `This shell sets NODE_EXTRA_CA_CERTS=${file}; the agent was timed without it, as a node starts it (bench/lib.ts agentEnv). ` +
    `With it, Node alone (\`node -e ''\`, medians of ${runs}) takes ${ms(r.b)} ms against ${ms(r.a)} ms: +${ms(r.b - r.a)} ms on every agent run.`
  )
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2
}

/**
 * Times `a` and `b` alternately `runs` times (alternating spreads the machine's
 * noise over both) and returns the medians and the speed ratio b/a (>1: a is faster).
 */
export const compare = async (
  runs: number,
  a: () => Promise<number>,
  b: () => Promise<number>,
  between?: () => Promise<void>,
): Promise<{ a: number; b: number; ratio: number; as: number[]; bs: number[] }> => {
  const as: number[] = []
  const bs: number[] = []
  for (let i = 0; i < runs; i++) {
    await between?.()
    as.push(await a())
    await between?.()
    bs.push(await b())
  }
  const ma = median(as)
  const mb = median(bs)
  return { a: ma, b: mb, ratio: mb / ma, as, bs }
}

/** Writes `bytes` of incompressible pseudo-random data (fast: a repeated 64 MiB random block would dedupe, so each MiB is fresh). */
export const makeRandomFile = async (path: string, bytes: number): Promise<void> => {
  const { randomFillSync } = await import('node:crypto')
  const fh = await open(path, 'w')
  const buf = Buffer.allocUnsafe(4 * 1024 * 1024)
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(buf.length, bytes - done)
      randomFillSync(buf, 0, n)
      await fh.write(buf, 0, n)
      done += n
    }
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** A web root `DIR/www` holding `image.squashfs`: `bytes` of random data, for nginx to serve. */
export const makeServedImage = async (dir: string, bytes: number): Promise<{ www: string; image: string }> => {
  const www = join(dir, 'www')
  await mkdir(www)
  const image = join(www, 'image.squashfs')
  process.stderr.write(`making ${bytes} bytes of random data…\n`)
  await makeRandomFile(image, bytes)
  return { www, image }
}

export const gbps = (bytes: number, seconds: number): string => (bytes / seconds / 1e9).toFixed(2)

export const withTempDir = async <T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> => {
  const dir = await mkdtemp(join(process.env.BENCH_TMPDIR ?? '/var/tmp', prefix))
  try {
    return await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

export const tmp = tmpdir
