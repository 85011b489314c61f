/**
 * Turns the daemon's `--slurm*` and `--metrics*` options into observers,
 * validated at the edge: a bad mode or node-name pattern is a ConfigError
 * naming the value before the daemon starts, never a failure at the first
 * kernel error.
 */
import { stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { ConfigError } from '../core/errors.js'
import { commandPath } from '../core/exec.js'
import { commands } from '../core/system.js'
import type { Logger } from '../core/log.js'
import { DEFAULT_METRICS_INTERVAL_MS, defaultMetricsFile, MetricsTextfile } from './metrics-file.js'
import type { DaemonObserver } from './observer.js'
import { parseSlurmMode, slurmNodeName } from './slurm-decide.js'
import { SlurmGuard } from './slurm.js'

export interface ObserverSettings {
  /** boot-agent's node id (for `{node}` in the Slurm name pattern). */
  node: string
  /** `--slurm`: off | drain | drain+resume; default off. */
  slurm?: string | undefined
  /** `--slurm-node`: pattern; default `{short}`. */
  slurmNode?: string | undefined
  slurmDryRun?: boolean
  /** `--metrics-file`: a path; undefined: the default, used only when its directory exists; null: off. */
  metricsFile?: string | null | undefined
  metricsIntervalMs?: number
  log: Logger
}

/**
 * A `--metrics-file` node_exporter will read: named `*.prom` (the textfile
 * collector ignores anything else, so another name was written and never
 * collected, silently) and not a directory (every write failed).
 */
const checkMetricsFile = async (path: string): Promise<void> => {
  if (!basename(path).endsWith('.prom') || basename(path) === '.prom') {
    throw new ConfigError('--metrics-file', `${JSON.stringify(path)} does not end in .prom: node_exporter's textfile collector reads only *.prom files (e.g. ${join(dirname(path), 'boot-agent.prom')})`)
  }
  if (await stat(path).then((st) => st.isDirectory(), () => false)) throw new ConfigError('--metrics-file', `${path} is a directory; name the file, e.g. ${join(path, 'boot-agent.prom')}`)
}

/** The Slurm guard (when on) and the metrics textfile (when wanted), in that order. */
export const daemonObservers = async (s: ObserverSettings): Promise<DaemonObserver[]> => {
  const out: DaemonObserver[] = []
  const mode = parseSlurmMode(s.slurm ?? 'off')
  let guard: SlurmGuard | undefined
  if (mode !== 'off') {
    const nodeName = slurmNodeName(s.slurmNode ?? '{short}', { node: s.node })
    guard = new SlurmGuard({ mode, nodeName, dryRun: s.slurmDryRun === true, log: s.log })
    out.push(guard)
    s.log.info({ slurm: mode, slurmNode: nodeName, dryRun: s.slurmDryRun === true }, `slurm: ${mode} as node ${nodeName}`)
    if (!(await commandPath(commands.scontrol))) {
      s.log.warn({ slurm: mode, scontrol: commands.scontrol }, `slurm: scontrol (${commands.scontrol}) is not installed or not executable: this node cannot drain itself; install Slurm's client (Debian: slurm-client) or set BOOT_AGENT_CMD_SCONTROL to its path`)
    }
  } else if (s.slurmNode !== undefined || s.slurmDryRun) {
    throw new ConfigError('--slurm', '--slurm-node and --slurm-dry-run need --slurm drain or --slurm drain+resume')
  }
  if (s.metricsFile !== null) {
    if (s.metricsFile !== undefined) await checkMetricsFile(s.metricsFile)
    const path = s.metricsFile ?? defaultMetricsFile()
    const dirThere = await stat(dirname(path)).then((st) => st.isDirectory(), () => false)
    if (dirThere) {
      out.push(new MetricsTextfile({
        path, intervalMs: s.metricsIntervalMs ?? DEFAULT_METRICS_INTERVAL_MS, log: s.log,
        ...(guard ? { slurm: () => ({ ...(guard as SlurmGuard).counters }) } : {}),
      }))
    } else if (s.metricsFile !== undefined) {
      throw new ConfigError('--metrics-file', `directory ${dirname(path)} does not exist (node_exporter's --collector.textfile.directory)`)
    } else {
      s.log.info({ dir: dirname(path) }, 'no textfile-collector directory: metrics file off (--metrics-file to choose one)')
    }
  }
  return out
}
