/**
 * Image origins we did not write (issue 20): Debian's Apache httpd and
 * lighttpd, each started with a minimal configuration of its own on a free
 * loopback port, serving a directory as static files (their own Range,
 * If-Range, HEAD and multi-range handling), in the foreground, killed with
 * the test process (setpriv's parent-death signal), as test/helpers/nginx.ts
 * does for nginx.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, spawnServer } from './nginx.js'

export type OriginKind = 'apache' | 'lighttpd'

export interface Origin {
  kind: OriginKind
  url: string
  stop(): Promise<void>
}

export const APACHE = '/usr/sbin/apache2'
export const LIGHTTPD = '/usr/sbin/lighttpd'

/** The config file's text and the command line for `kind` serving `root` on `port`, its files under `prefix`. */
const configFor = (kind: OriginKind, root: string, port: number, prefix: string): { conf: string; argv: string[] } => {
  const confPath = join(prefix, `${kind}.conf`)
  if (kind === 'apache') {
    return {
      conf: `ServerRoot /usr/lib/apache2
LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authz_core_module modules/mod_authz_core.so
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile ${prefix}/httpd.pid
Mutex file:${prefix}
ErrorLog ${prefix}/error.log
User nobody
Group nogroup
DocumentRoot ${root}
<Directory ${root}>
  Require all granted
</Directory>
`,
      // -X: one process in the foreground; APACHE_RUN_USER-style defaults are not read.
      argv: [APACHE, '-X', '-f', confPath],
    }
  }
  return {
    conf: `server.document-root = "${root}"
server.bind = "127.0.0.1"
server.port = ${port}
server.pid-file = "${prefix}/lighttpd.pid"
server.errorlog = "${prefix}/error.log"
server.upload-dirs = ( "${prefix}" )
`,
    argv: [LIGHTTPD, '-D', '-f', confPath],
  }
}

/** Starts `kind` serving `root` on a free loopback port; pair with `stop()`. */
export const startOrigin = async (kind: OriginKind, root: string): Promise<Origin> => {
  const prefix = await mkdtemp(join(tmpdir(), `ba-${kind}-`))
  await chmod(prefix, 0o755)
  const port = await freePort()
  const { conf, argv } = configFor(kind, root, port, prefix)
  await writeFile(join(prefix, `${kind}.conf`), conf)
  const [bin, ...args] = argv as [string, ...string[]]
  // Apache will not serve as root: it drops to nobody, so the served files must be world-readable (test dirs are).
  const child = await spawnServer(bin, args, port).catch(async (e: unknown) => {
    await rm(prefix, { recursive: true, force: true })
    throw e
  })
  return {
    kind,
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
        await exited
        clearTimeout(timer)
      }
      await rm(prefix, { recursive: true, force: true })
    },
  }
}
