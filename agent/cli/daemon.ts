/**
 * `boot-agent daemon`: the node daemon under systemd (SPEC §9). Defaults come
 * from the boot record the boot stage left in /run/boot-agent.
 */
import { join } from 'node:path'
import { readTokenFile } from '../core/head-token.js'
import { RUN_TOKEN_FILE } from '../boot/node-token.js'
import { ConfigError } from '../core/errors.js'
import { system } from '../core/system.js'
import { type Command, parseCommandArgs } from './command.js'
import { readBootRecord } from '../daemon/boot-record.js'
import { runDaemon } from '../daemon/daemon.js'
import { daemonObservers } from '../daemon/observers-config.js'
import { createNotifier } from '../daemon/notify.js'

const usage = `usage: boot-agent daemon [options]

Watches the kernel log for squashfs and block I/O errors, ties them to the
cached image they hit, re-verifies that image in the background, and reports
events (and what the boot stage spooled) to the head node. Defaults come from
${system.runDir}/boot-record.json.

options:
  --server URL          head node base URL (default: the boot record's server)
  --node ID             this node's id (default: the boot record's node)
  --token-file FILE     bearer token for the head node (first line of FILE; mode 0600,
                        owned by root); default: ${system.runDir}/token (left by the boot
                        stage) or ${system.tokenFile}, when present (docs/security.md)
  --state-dir DIR       kmsg position, heartbeat and spool (default ${system.stateDir})
  --cache-dir DIR       a cache directory whose objects are this node's (repeatable;
                        default: the boot record's cache mountpoint)
  --boot-record FILE    hand-off record to read (default ${system.runDir}/boot-record.json)
  --heartbeat-interval S  seconds between status heartbeats; 0 = off (default 300)
  --no-self-check       do not re-verify cached images after squashfs errors
  --spool-max N         most events kept in the spool (default 10000)
  --slurm MODE          drain this node in Slurm on squashfs/io/integrity trouble:
                        off | drain | drain+resume (default off; resume clears only
                        a reason starting "boot-agent:", after a verified boot)
  --slurm-node PATTERN  Slurm node name; {short} {hostname} {node} are replaced
                        (default {short}: the hostname up to its first dot)
  --slurm-dry-run       log the scontrol update commands instead of running them
  --metrics-file FILE   Prometheus textfile (*.prom) written atomically (default
                        ${system.promTextfileDir}/boot-agent.prom, when that directory exists)
  --metrics-interval S  seconds between rewrites of the metrics file (default 30, at least 1)
  --no-metrics          do not write the metrics file
  --once                read what the kernel log holds, report, deliver once, exit
                        (exit 1 when delivery failed; events stay spooled)
  -h, --help            this text`

const positiveInt = (key: string, v: string | undefined, dflt: number): number => {
  if (v === undefined) return dflt
  if (!/^\d{1,9}$/.test(v)) throw new ConfigError(key, `expected a whole number, got ${JSON.stringify(v)}`)
  return Number(v)
}

/** Node's longest timer (2^31 - 1 ms, ~24.8 days): a longer setInterval fires every millisecond instead. */
const MAX_INTERVAL_S = Math.floor((2 ** 31 - 1) / 1000)

/** An interval in seconds from `key`, from `min` up to the longest timer. */
const intervalSeconds = (key: string, v: string | undefined, dflt: number, min: number): number => {
  const n = positiveInt(key, v, dflt)
  if (n < min || n > MAX_INTERVAL_S) throw new ConfigError(key, `must be from ${min} to ${MAX_INTERVAL_S} seconds, got ${v}${min > 0 ? ' (--no-metrics turns the file off)' : ''}`)
  return n
}

export const command: Command = {
  name: 'daemon',
  summary: 'run the node daemon (kernel-log watcher, reports, status)',
  usage,
  run: async (argv, ctx) => {
    const { values } = parseCommandArgs('daemon', argv, {
      server: { type: 'string' },
      node: { type: 'string' },
      'state-dir': { type: 'string' },
      'cache-dir': { type: 'string', multiple: true },
      'boot-record': { type: 'string' },
      'heartbeat-interval': { type: 'string' },
      'no-self-check': { type: 'boolean' },
      'spool-max': { type: 'string' },
      once: { type: 'boolean' },
      'token-file': { type: 'string' },
      slurm: { type: 'string' },
      'slurm-node': { type: 'string' },
      'slurm-dry-run': { type: 'boolean' },
      'metrics-file': { type: 'string' },
      'metrics-interval': { type: 'string' },
      'no-metrics': { type: 'boolean' },
    })
    // Given: must be there. Default: the boot stage's hand-off copy, else the system's file, when present.
    const token = values['token-file']
      ? await readTokenFile(values['token-file'], { key: '--token-file' })
      : ((await readTokenFile(join(system.runDir, RUN_TOKEN_FILE), { key: 'token file', optional: true })) ??
        (await readTokenFile(system.tokenFile, { key: 'token file', optional: true })))
    const br = await readBootRecord(values['boot-record'])
    if (br?.problems.length) ctx.log.warn({ problems: br.problems }, 'boot record has malformed fields; they are ignored')
    const node = values.node ?? br?.node
    if (!node) throw new ConfigError('--node', 'no node id: pass --node or boot with boot-agent (boot record has none)')
    const server = values.server ?? br?.server
    if (server !== undefined && !/^https?:\/\/[^\s]+$/.test(server)) throw new ConfigError('--server', `not an http(s) URL: ${JSON.stringify(server)}`)
    if (!server) ctx.log.warn('no head node (--server or boot record): events stay spooled')
    const observers = await daemonObservers({
      node,
      slurm: values.slurm,
      slurmNode: values['slurm-node'],
      slurmDryRun: values['slurm-dry-run'] === true,
      metricsFile: values['no-metrics'] ? null : values['metrics-file'],
      metricsIntervalMs: intervalSeconds('--metrics-interval', values['metrics-interval'], 30, 1) * 1000,
      log: ctx.log,
    })
    // Under systemd (Type=notify): ready once reading, watchdog pings, stopping on SIGTERM.
    const notifier = values.once ? undefined : createNotifier({ log: ctx.log })
    const stopPings = new AbortController()
    notifier?.watchdog(AbortSignal.any([ctx.signal, stopPings.signal]))
    const onStop = (): void => void notifier?.send({ STOPPING: '1', STATUS: 'stopping: last flush and delivery' })
    ctx.signal.addEventListener('abort', onStop, { once: true })
    const res = await runDaemon({
      observers,
      node,
      ...(server ? { server } : {}),
      ...(token ? { token } : {}),
      stateDir: values['state-dir'] ?? system.stateDir,
      cacheDirs: values['cache-dir'] ?? [],
      ...(br ? { bootRecord: br } : {}),
      ...(br?.spoolDir ? { extraSpoolDirs: [br.spoolDir] } : {}),
      heartbeatIntervalMs: intervalSeconds('--heartbeat-interval', values['heartbeat-interval'], 300, 0) * 1000,
      selfCheck: !values['no-self-check'],
      ...(values['spool-max'] ? { spoolMaxEvents: Math.max(1, positiveInt('--spool-max', values['spool-max'], 10_000)) } : {}),
      once: values.once === true,
      ...(notifier ? { onReady: () => void notifier.send({ READY: '1', STATUS: `watching the kernel log for node ${node}${server ? `, reporting to ${server}` : ', no head node: events stay spooled'}` }) } : {}),
      log: ctx.log,
      signal: ctx.signal,
    }).finally(() => {
      stopPings.abort()
      ctx.signal.removeEventListener('abort', onStop)
    })
    ctx.log.info({ ...res }, 'daemon stopped')
    return res.deliveryError ? 1 : 0
  },
}
