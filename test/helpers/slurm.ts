/**
 * A real Slurm cluster of one node on this machine (Debian's slurmctld,
 * slurmd and munge): a minimal slurm.conf with every state and log path in a
 * temporary directory, free loopback ports, a fresh munge key and a munged on
 * its own socket (slurm.conf's AuthInfo=socket=… tells slurmctld, slurmd and
 * scontrol where), the daemons in the foreground (-D) as children of the
 * test, and `stop()` that ends them and removes the directory. `env` is what
 * scontrol/sinfo need (SLURM_CONF) — the daemon under test gets it too.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './nginx.js'
import { waitUntil } from './wait.js'
import { stopChild } from './stop-child.js'

const execFileP = promisify(execFile)

export interface SlurmCluster {
  nodeName: string
  /** SLURM_CONF for scontrol/sinfo. */
  env: NodeJS.ProcessEnv
  /** Runs a Slurm client command (scontrol, sinfo) against this cluster; stdout. */
  client(cmd: string, args: string[]): Promise<string>
  /** `sinfo -h -N -n NODE -o %T|%E`: state (idle, drained, …) and reason ('none' when none). */
  node(): Promise<{ state: string; reason: string }>
  stop(): Promise<void>
}

/** Starts munged, slurmctld and slurmd; resolves once sinfo shows the node idle. */
export const startSlurm = async (nodeName = 'banode1'): Promise<SlurmCluster> => {
  // munged refuses a socket directory that is not traversable by everyone or is group/world writable.
  const dir = await mkdtemp('/var/tmp/ba-slurm-')
  await chmod(dir, 0o755)
  const children: ChildProcess[] = []
  const stop = async (): Promise<void> => {
    for (const c of children.reverse()) await stopChild(c)
    await rm(dir, { recursive: true, force: true })
  }
  try {
    for (const d of ['munge', 'state', 'spool']) await mkdir(join(dir, d), { mode: 0o755 })
    const key = join(dir, 'munge', 'munge.key')
    await writeFile(key, randomBytes(1024), { mode: 0o600 })
    const socket = join(dir, 'munge', 'munge.socket')
    const [ctldPort, slurmdPort] = [await freePort(), await freePort()]
    const conf = join(dir, 'slurm.conf')
    await writeFile(conf, [
      'ClusterName=batest',
      'SlurmctldHost=localhost',
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${slurmdPort}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      'AuthType=auth/munge',
      'CredType=cred/munge',
      `AuthInfo=socket=${socket}`,
      `StateSaveLocation=${join(dir, 'state')}`,
      `SlurmdSpoolDir=${join(dir, 'spool')}`,
      `SlurmctldPidFile=${join(dir, 'slurmctld.pid')}`,
      `SlurmdPidFile=${join(dir, 'slurmd.pid')}`,
      `SlurmctldLogFile=${join(dir, 'slurmctld.log')}`,
      `SlurmdLogFile=${join(dir, 'slurmd.log')}`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'SchedulerType=sched/builtin',
      'SelectType=select/linear',
      'MpiDefault=none',
      // A node that comes back registers as usable; drains stay until resumed (what we test).
      'ReturnToService=2',
      `NodeName=${nodeName} NodeAddr=127.0.0.1 CPUs=1 RealMemory=100 State=UNKNOWN`,
      `PartitionName=batest Nodes=${nodeName} Default=YES MaxTime=INFINITE State=UP`,
      '',
    ].join('\n'))
    const env = { ...process.env, SLURM_CONF: conf }
    const start = (cmd: string, args: string[]): ChildProcess => {
      const c = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
      c.stderr?.resume()
      children.push(c)
      return c
    }
    start('munged', ['-F', `--socket=${socket}`, `--key-file=${key}`, `--pid-file=${join(dir, 'munge', 'munged.pid')}`,
      `--log-file=${join(dir, 'munge', 'munged.log')}`, `--seed-file=${join(dir, 'munge', 'seed')}`])
    const client = async (cmd: string, args: string[]): Promise<string> => (await execFileP(cmd, args, { env, timeout: 10_000 })).stdout
    await waitUntil('munged socket', () => stat(socket).then(() => true, () => false), { timeoutMs: 10_000 })
    start('slurmctld', ['-D', '-f', conf])
    start('slurmd', ['-D', '-N', nodeName, '-f', conf])
    const node = async (): Promise<{ state: string; reason: string }> => {
      const out = (await client('sinfo', ['-h', '-N', '-n', nodeName, '-o', '%T|%E'])).trim()
      const i = out.indexOf('|')
      return { state: out.slice(0, i), reason: out.slice(i + 1) }
    }
    await waitUntil(`sinfo showing ${nodeName} idle`, async () => {
      for (const c of children) if (c.exitCode !== null) throw new Error(`${String(c.spawnfile)} exited ${c.exitCode}: see ${dir}`)
      return (await node().catch(() => ({ state: '' }))).state === 'idle'
    }, { timeoutMs: 30_000, everyMs: 200 })
    return { nodeName, env, client, node, stop }
  } catch (e) {
    await stop()
    throw e
  }
}
