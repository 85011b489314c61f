/**
 * A real nginx (Debian's nginx-light) serving a directory on a loopback port,
 * with `Range` support (nginx's default for static files) and an access log
 * that records what each request was sent, so tests can count image bytes.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitUntil } from './wait.js'

export interface AccessRecord {
  method: string
  path: string
  status: number
  /** Body bytes sent. */
  bytes: number
  /** The request's Range header, or '' when none. */
  range: string
  /** nginx's connection serial number: requests on different connections at once were in parallel. */
  connection: number
}

export interface Nginx {
  url: string
  port: number
  root: string
  /**
   * Parsed access log of every request answered so far. nginx writes a line
   * when it finishes a request, which can be just after the client has the
   * last byte: a marker request is sent and the log polled until the
   * marker's line is in (nginx is one process handling events in turn, so
   * the lines of requests answered before it are in too). Marker lines are
   * left out.
   */
  access(): Promise<AccessRecord[]>
  /** Forgets the access log so far (every request answered so far included, as for `access`). */
  clearAccess(): Promise<void>
  stop(): Promise<void>
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      s.close(() => resolve(port))
    })
  })

/** Waits until something accepts connections on the loopback port (plain TCP: the server may speak TLS). */
export const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    s.setTimeout(1000, () => s.destroy())
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
    s.once('close', () => resolve(false))
  })

/** Waits until `child` (a server just spawned) accepts connections on `port`; throws if it exits first. */
export const waitForPort = async (port: number, child: ChildProcess, deadlineMs = 10_000): Promise<void> => {
  const until = Date.now() + deadlineMs
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${child.spawnfile} exited ${child.exitCode} at start`)
    if (await canConnect(port)) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nginx did not listen on ${port} within ${deadlineMs} ms`)
}

/** Path of the requests `access()` sends to know the log is complete (404s, never in its answer). */
const MARKER_PATH = '/.ba-access-log-marker-'
/** Longest wait for a marker's line. */
const MARKER_TIMEOUT_MS = 10_000

/** One GET to `url`, its body read and dropped; resolves once it ended (any status). */
const getAndDrop = (url: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get
    get(url, { agent: false, rejectUnauthorized: false }, (res) => {
      res.resume()
      res.on('end', () => resolve())
      res.on('error', reject)
    }).on('error', reject)
  })

const NGINX = ['/usr/sbin/nginx', 'nginx']

/**
 * Spawns a server in the foreground, killed with this process (setpriv's
 * parent-death signal when there is setpriv), and waits until it listens on
 * `port`; if it does not, it is killed and the error carries its stderr.
 */
export const spawnServer = async (bin: string, argv: string[], port: number): Promise<ChildProcess> => {
  const child = existsSync(SETPRIV)
    ? spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', bin, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(bin, argv, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  try {
    await waitForPort(port, child)
  } catch (e) {
    child.kill('SIGKILL')
    throw new Error(`${(e as Error).message}: ${stderr}`)
  }
  return child
}
const SETPRIV = '/usr/bin/setpriv'

/**
 * Starts nginx serving `root`, over https when `tls` gives a certificate and
 * key (PEM files; the URL is then https://127.0.0.1:PORT). Always pair with
 * `stop()` (e.g. in t.teardown).
 */
export const startNginx = async (root: string, opts: { tls?: { cert: string; key: string } } = {}): Promise<Nginx> =>
  startNginxWith(
    (prefix, port) => `
    listen 127.0.0.1:${port}${opts.tls ? ` ssl;\n    ssl_certificate ${opts.tls.cert};\n    ssl_certificate_key ${opts.tls.key}` : ''};
    root ${root};
    location / { autoindex off; }
`,
    { root, ...(opts.tls ? { scheme: 'https' as const } : {}) },
  )

/**
 * Starts nginx with the same process, log and temp-path set-up as
 * {@link startNginx}, the inside of its one `server {}` block written by
 * `server(prefix, port)` (none without it: `httpExtra` then has its own,
 * listening on `port`), and `http` lines of the caller's (`httpExtra`, e.g.
 * a proxy cache) before it.
 */
export const startNginxWith = async (
  server: ((prefix: string, port: number) => string) | undefined,
  opts: { root?: string; scheme?: 'http' | 'https'; httpExtra?: (prefix: string, port: number) => string } = {},
): Promise<Nginx> => {
  const prefix = await mkdtemp(join(tmpdir(), 'ba-nginx-'))
  await mkdir(join(prefix, 'logs'), { recursive: true })
  const port = await freePort()
  const accessLog = join(prefix, 'logs', 'access.log')
  const conf = `
worker_processes 1;
daemon off;
master_process off;
user root;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 100000;
  log_format ba '$request_method\\t$uri\\t$status\\t$body_bytes_sent\\t$http_range\\t$connection';
  access_log ${accessLog} ba;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
${opts.httpExtra?.(prefix, port) ?? ''}
${server ? `  server {\n${server(prefix, port)}\n  }` : ''}
}
`
  await writeFile(join(prefix, 'nginx.conf'), conf)
  const bin = NGINX.find((b) => b.startsWith('/')) ?? 'nginx'
  // One process (master_process off), killed with this one (util-linux setpriv's
  // PR_SET_PDEATHSIG): a test process that tap kills at its timeout never runs its
  // teardown, and an nginx left behind would serve on. (With a master process,
  // its workers outlive a killed master.)
  const argv = ['-p', prefix, '-c', join(prefix, 'nginx.conf')]
  const child = await spawnServer(bin, argv, port)
  const parse = (text: string): AccessRecord[] =>
    text
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [method = '', path = '', status = '0', bytes = '0', range = '', connection = '0'] = line.split('\t')
        return { method, path, status: Number(status), bytes: Number(bytes), range: range === '-' ? '' : range, connection: Number(connection) }
      })
  const url = `${opts.scheme ?? 'http'}://127.0.0.1:${port}`
  let markers = 0
  /** The whole log, once a fresh marker's line is in it. */
  const settled = async (): Promise<AccessRecord[]> => {
    const path = `${MARKER_PATH}${++markers}`
    await getAndDrop(`${url}${path}`)
    return waitUntil(
      `nginx to log ${path}`,
      async () => {
        const records = parse(await readFile(accessLog, 'utf8').catch(() => ''))
        return records.some((a) => a.path === path) && records
      },
      { timeoutMs: MARKER_TIMEOUT_MS },
    )
  }
  return {
    url,
    port,
    root: opts.root ?? prefix,
    access: async () => (await settled()).filter((a) => !a.path.startsWith(MARKER_PATH)),
    clearAccess: async () => {
      await settled()
      await writeFile(accessLog, '')
    },
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        child.kill('SIGQUIT')
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
        await exited
        clearTimeout(timer)
      }
      await rm(prefix, { recursive: true, force: true })
    },
  }
}
