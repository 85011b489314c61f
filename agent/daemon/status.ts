/**
 * The node's boot-agent state from local files only (no network): the boot
 * record, the spools (depth, lost count), the kmsg position, the last
 * heartbeat, and cache usage. `boot-agent status` prints it.
 */
import { join } from 'node:path'
import { Spool } from '../events/spool.js'
import { readBootRecord, type BootRecordView } from './boot-record.js'
import { cacheUsage, type CacheUsage } from './cache-usage.js'
import { formatMountChain, readMountChain, type MountChain } from './mount-chain.js'
import { readHeartbeat, readPosition, SPOOL_SUBDIR, type HeartbeatState, type KmsgPosition } from './state.js'

export interface SpoolStatus {
  dir: string
  events: number
  lost: number
  lostTotal: number
  oldest?: string
}

export interface NodeStatus {
  bootRecordPath: string
  bootRecord: BootRecordView | null
  bootRecordError?: string
  stateDir: string
  kmsg: KmsgPosition | null
  lastHeartbeat: { time: string; eventId: string } | null
  spools: SpoolStatus[]
  caches: CacheUsage[]
  /** An overlay root's mounts, as the kernel has them (mount-chain.ts); null when the root is not one. */
  mountChain: MountChain | null
}

const spoolStatus = async (dir: string): Promise<SpoolStatus> => {
  const s = new Spool(dir)
  const files = await s.files()
  const lost = await s.lostState()
  const first = files[0] ? (await s.peekFiles([files[0]]))[0] : undefined
  return { dir, events: files.length, lost: lost.count, lostTotal: lost.total, ...(first ? { oldest: first.event.time } : {}) }
}

export const gatherStatus = async (opts: { bootRecordPath: string; stateDir: string; cacheDirs?: string[] }): Promise<NodeStatus> => {
  let bootRecord: BootRecordView | undefined
  let bootRecordError: string | undefined
  try {
    bootRecord = await readBootRecord(opts.bootRecordPath)
  } catch (e) {
    bootRecordError = e instanceof Error ? e.message : String(e)
  }
  const spoolDirs = [...new Set([...(bootRecord?.spoolDir ? [bootRecord.spoolDir] : []), join(opts.stateDir, SPOOL_SUBDIR)])]
  const cacheDirs = [...new Set([...(opts.cacheDirs ?? []), ...(bootRecord?.cache?.mountpoint ? [bootRecord.cache.mountpoint] : [])])]
  const hb: HeartbeatState | undefined = await readHeartbeat(opts.stateDir)
  return {
    bootRecordPath: opts.bootRecordPath,
    bootRecord: bootRecord ?? null,
    ...(bootRecordError ? { bootRecordError } : {}),
    stateDir: opts.stateDir,
    kmsg: (await readPosition(opts.stateDir)) ?? null,
    lastHeartbeat: hb ? { time: hb.time, eventId: hb.eventId } : null,
    spools: await Promise.all(spoolDirs.map(spoolStatus)),
    caches: await Promise.all(cacheDirs.map(cacheUsage)),
    mountChain: (await readMountChain(bootRecord?.root?.sysroot ? [bootRecord.root.sysroot] : [])) ?? null,
  }
}

const bytes = (n: number | undefined): string => {
  if (n === undefined) return '?'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return `${u ? v.toFixed(1) : v} ${units[u]}`
}

/** Human-readable lines. */
export const formatStatus = (s: NodeStatus): string[] => {
  const br = s.bootRecord
  const lines: string[] = []
  if (!br) lines.push(`boot:      no boot record at ${s.bootRecordPath}${s.bootRecordError ? ` (${s.bootRecordError})` : ''}`)
  else {
    lines.push(`node:      ${br.node ?? '?'}   server: ${br.server ?? '?'}`)
    lines.push(`image:     ${br.image?.name ?? '?'} sha256:${br.image?.sha256 ?? '?'}`)
    const style = br.requestedStyle && br.requestedStyle !== br.style ? `${br.style ?? '?'} (asked ${br.requestedStyle})` : (br.style ?? '?')
    lines.push(`boot:      ${br.result ?? '?'}, style ${style}, cache ${br.cache?.hit === undefined ? '?' : br.cache.hit ? 'hit' : 'miss'}`)
    for (const f of br.fallbacks) lines.push(`fallback:  ${f.kind}: ${f.reason}`)
  }
  if (s.mountChain) lines.push(`root:      ${formatMountChain(s.mountChain)}`)
  lines.push(s.kmsg ? `kmsg:      seq ${s.kmsg.seq} (boot ${s.kmsg.bootId.slice(0, 8)}), ${s.kmsg.lost} record(s) lost, at ${s.kmsg.time}` : 'kmsg:      not read yet (daemon not started)')
  lines.push(s.lastHeartbeat ? `heartbeat: ${s.lastHeartbeat.time}` : 'heartbeat: none yet')
  for (const sp of s.spools) lines.push(`spool:     ${sp.events} event(s) waiting, ${sp.lost} lost unreported (${sp.lostTotal} ever)${sp.oldest ? `, oldest ${sp.oldest}` : ''}  [${sp.dir}]`)
  for (const c of s.caches) lines.push(`cache:     ${c.objects} object(s), ${bytes(c.bytes)}${c.corruptObjects ? `, ${c.corruptObjects} marked corrupt` : ''}; filesystem ${bytes(c.fsFreeBytes)} free of ${bytes(c.fsBytes)}  [${c.dir}]`)
  return lines
}
