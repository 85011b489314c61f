/**
 * The `status` heartbeat (SPEC §8): what a head node wants to know about a
 * node at a glance, in the spirit of a remote build node's status object —
 * arch, CPUs, memory, disks, cache use, the image it runs, its boot style and
 * fallbacks. Hardware facts come from systeminformation; each probe has a
 * deadline and a failing probe leaves its field out (listed in `probeErrors`).
 */
import os from 'node:os'
import type { BootRecordView } from './boot-record.js'
import { cacheUsage } from './cache-usage.js'
import { BootAgentError, messageOf } from '../core/errors.js'
import type { StatusData } from '../protocol/payloads.js'

export const PROBE_TIMEOUT_MS = 5_000

const within = async <T>(what: string, p: Promise<T>, errors: string[]): Promise<T | undefined> => {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BootAgentError('ETIMEOUT', `${what} took over ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS)
      }),
    ])
  } catch (e) {
    errors.push(`${what}: ${messageOf(e)}`)
    return undefined
  } finally {
    clearTimeout(timer)
  }
}

export interface HeartbeatInput {
  bootRecord?: BootRecordView
  cacheDirs: string[]
  /** Extra fields from the daemon (spool depth, kmsg position, …). */
  daemon: Record<string, unknown>
}

export const collectStatus = async (input: HeartbeatInput): Promise<StatusData> => {
  // Loaded here, not at the top: systeminformation is about half the agent's
  // code, and the daemon starts watching the kernel log before it is needed.
  // `.default`: it is CommonJS, and in the code-split bundle its chunk has only
  // a default export (module.exports), as Node gives an ESM importer.
  const si = (await import('systeminformation')).default
  const errors: string[] = []
  const [cpu, mem, fs, osInfo] = await Promise.all([
    within('cpu', si.cpu(), errors),
    within('mem', si.mem(), errors),
    within('fsSize', si.fsSize(), errors),
    within('osInfo', si.osInfo(), errors),
  ])
  const caches = await Promise.all(input.cacheDirs.map((d) => within(`cache ${d}`, cacheUsage(d), errors)))
  const br = input.bootRecord
  return {
    hostname: os.hostname(),
    arch: osInfo?.arch ?? os.arch(),
    kernel: osInfo?.kernel ?? os.release(),
    ...(osInfo ? { distro: `${osInfo.distro} ${osInfo.release}`.trim() } : {}),
    uptimeS: Math.round(os.uptime()),
    cpus: cpu ? { brand: `${cpu.manufacturer} ${cpu.brand}`.trim(), cores: cpu.cores, physicalCores: cpu.physicalCores } : { cores: os.cpus().length },
    memory: mem ? { totalBytes: mem.total, availableBytes: mem.available } : { totalBytes: os.totalmem(), availableBytes: os.freemem() },
    disks: (fs ?? []).filter((f) => f.size > 0).slice(0, 32).map((f) => ({ fs: f.fs, type: f.type, mount: f.mount, sizeBytes: f.size, usedBytes: f.used })),
    cache: caches.filter((c) => c !== undefined),
    running: br?.image ? { name: br.image.name, sha256: br.image.sha256 } : null,
    style: br?.style ?? null,
    requestedStyle: br?.requestedStyle ?? null,
    fallbacks: br?.fallbacks ?? [],
    bootResult: br?.result ?? null,
    daemon: input.daemon,
    ...(errors.length ? { probeErrors: errors } : {}),
  }
}
