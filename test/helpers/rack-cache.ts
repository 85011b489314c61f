/**
 * A real nginx rack cache: the shipped contrib/nginx/rack-cache.conf, with
 * only its three EDIT lines (cache directory and size, upstream, listen)
 * rewritten for a loopback test, in front of `upstream` (a real head).
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BootAgentError } from '../../agent/core/errors.js'
import { startNginxWith, type Nginx } from './nginx.js'

/** The shipped configuration. */
export const RACK_CACHE_CONF = fileURLToPath(new URL('../../contrib/nginx/rack-cache.conf', import.meta.url))

/** Replaces exactly one line matching `re` (the shipped file must still have it). */
const edit = (text: string, re: RegExp, line: string): string => {
  if ((text.match(new RegExp(re.source, 'gm')) ?? []).length !== 1) throw new BootAgentError('EINTERNAL', `rack-cache.conf: expected one line matching ${re}`)
  return text.replace(new RegExp(re.source, 'm'), line)
}

/** The shipped config for a cache in `dir` of at most `maxSize` (nginx size, e.g. `256m`) before `upstream`, listening on `port`. */
export const renderRackCache = (text: string, o: { dir: string; maxSize: string; upstream: string; port: number }): string => {
  const up = new URL(o.upstream)
  let out = edit(text, /^proxy_cache_path .*$/, `proxy_cache_path ${o.dir} levels=1:2 keys_zone=bootagent_rack:16m max_size=${o.maxSize} inactive=60d use_temp_path=off;`)
  out = edit(out, /^\s*server \d+\.\d+\.\d+\.\d+:\d+;$/, `    server ${up.hostname}:${up.port};`)
  out = edit(out, /^\s*listen \d+;$/, `    listen 127.0.0.1:${o.port};`)
  return out
}

export interface RackCache extends Nginx {
  /** Bytes received from upstream so far (headers included; every slice subrequest), with `upstreamLog`. */
  upstreamBytes(): Promise<number>
}

/**
 * Starts the shipped rack cache before `upstream`; pair with `stop()`. With
 * `upstreamLog`, every request that went upstream (slice subrequests too) is
 * logged with its `$upstream_bytes_received` (the access log then has the
 * subrequests' lines as well).
 */
export const startRackCache = async (upstream: string, opts: { maxSize?: string; upstreamLog?: boolean } = {}): Promise<RackCache> => {
  const text = await readFile(RACK_CACHE_CONF, 'utf8')
  let upLog = ''
  const ng = await startNginxWith(undefined, {
    httpExtra: (prefix, port) => {
      upLog = join(prefix, 'logs', 'upstream.log')
      const extra = opts.upstreamLog ? `  log_subrequest on;\n  log_format ba_up '$upstream_bytes_received';\n  access_log ${upLog} ba_up if=$upstream_bytes_received;\n` : ''
      return extra + renderRackCache(text, { dir: join(prefix, 'cache'), maxSize: opts.maxSize ?? '256m', upstream, port })
    },
  })
  return {
    ...ng,
    upstreamBytes: async () =>
      (await readFile(upLog, 'utf8').catch(() => ''))
        .split('\n')
        .flatMap((l) => l.split(/[, :]+/))
        .reduce((n, x) => n + (/^\d+$/.test(x) ? Number(x) : 0), 0),
  }
}
