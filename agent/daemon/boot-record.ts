/**
 * Reads the boot stage's hand-off record (`${runDir}/boot-record.json`, the
 * contract in docs and the common brief; the boot stage writes it). The daemon
 * takes only what it needs and validates it at the edge: a field of the wrong
 * type is left out (and said so), never trusted.
 */
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { system } from '../core/system.js'
import { BootAgentError, isErrno } from '../core/errors.js'

export interface BootRecordView {
  node?: string
  server?: string
  style?: string
  requestedStyle?: string
  fallbacks: { kind: string; reason: string }[]
  image?: { name?: string; sha256?: string; size?: number }
  cache?: { spec?: string; device?: string; mountpoint?: string; hit?: boolean; objectPath?: string }
  /** `mode` overlay: `mountpoint` (the root partition), `lower`, `upper`, `trash` (agent/boot/overlay.ts). */
  root?: { spec?: string; device?: string; sysroot?: string; mode?: string; mountpoint?: string; lower?: string; upper?: string; trash?: string }
  result?: string
  spoolDir?: string
  /** Image bytes downloaded, and bytes taken from older cached versions (delta), during the boot. */
  bytesFetched?: number
  bytesReused?: number
  /** Milliseconds per boot step, and `total` (the stage's timer). */
  timings?: Record<string, number>
  /** Fields that were present but malformed (ignored). */
  problems: string[]
}

export const bootRecordPath = (): string => join(system.runDir, 'boot-record.json')

const str = (o: Record<string, unknown>, k: string, problems: string[], where: string): string | undefined => {
  const v = o[k]
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string') return v
  problems.push(`${where}${k} is not a string`)
  return undefined
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined

const SHA256 = /^[0-9a-f]{64}$/

/** Parses a boot record's JSON text; throws only on text that is not a JSON object. */
export const parseBootRecord = (text: string): BootRecordView => {
  const o = obj(JSON.parse(text))
  if (!o) throw new BootAgentError('EBADRECORD', 'boot record is not a JSON object')
  const problems: string[] = []
  const out: BootRecordView = { fallbacks: [], problems }
  for (const k of ['node', 'server', 'style', 'requestedStyle', 'result', 'spoolDir'] as const) {
    const v = str(o, k, problems, '')
    if (v !== undefined) out[k] = v
  }
  if (Array.isArray(o.fallbacks)) {
    for (const f of o.fallbacks) {
      const fo = obj(f)
      if (fo && typeof fo.kind === 'string') out.fallbacks.push({ kind: fo.kind, reason: typeof fo.reason === 'string' ? fo.reason : '' })
    }
  }
  const image = obj(o.image)
  if (image) {
    out.image = {}
    const name = str(image, 'name', problems, 'image.')
    const sha = str(image, 'sha256', problems, 'image.')
    if (name !== undefined) out.image.name = name
    if (sha !== undefined) {
      if (SHA256.test(sha)) out.image.sha256 = sha
      else problems.push('image.sha256 is not a lower-case hex sha256')
    }
    if (typeof image.size === 'number' && Number.isSafeInteger(image.size)) out.image.size = image.size
  }
  for (const k of ['bytesFetched', 'bytesReused'] as const) {
    const v = o[k]
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) out[k] = v
    else if (v !== undefined && v !== null) problems.push(`${k} is not a byte count`)
  }
  const timings = obj(o.timings)
  if (timings) out.timings = Object.fromEntries(Object.entries(timings).filter((e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1]) && e[1] >= 0))
  const cache = obj(o.cache)
  if (cache) {
    out.cache = {}
    for (const k of ['spec', 'device', 'mountpoint', 'objectPath'] as const) {
      const v = str(cache, k, problems, 'cache.')
      if (v !== undefined) out.cache[k] = v
    }
    if (typeof cache.hit === 'boolean') out.cache.hit = cache.hit
  }
  const root = obj(o.root)
  if (root) {
    out.root = {}
    for (const k of ['spec', 'device', 'sysroot', 'mode', 'mountpoint', 'lower', 'upper', 'trash'] as const) {
      const v = str(root, k, problems, 'root.')
      if (v !== undefined) out.root[k] = v
    }
  }
  return out
}

/** Far above any boot record (a few KiB); a larger file is not one. */
const MAX_BOOT_RECORD_BYTES = 1024 * 1024

/** The boot record, or `undefined` when there is none (not booted by boot-agent). */
export const readBootRecord = async (path = bootRecordPath()): Promise<BootRecordView | undefined> => {
  let text: string
  try {
    // Non-blocking and checked first: --boot-record /dev/zero was read until V8's string limit.
    const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
    try {
      const st = await fh.stat()
      if (!st.isFile()) throw new BootAgentError('EBADRECORD', `${path} is not a regular file: the boot stage writes the record as one; pass --boot-record FILE`, { path })
      if (st.size > MAX_BOOT_RECORD_BYTES) throw new BootAgentError('EBADRECORD', `${path} is ${st.size} bytes, more than a boot record's ${MAX_BOOT_RECORD_BYTES}: not one the boot stage wrote; pass --boot-record FILE`, { path })
      text = await fh.readFile('utf8')
    } finally {
      await fh.close()
    }
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return undefined
    throw e
  }
  try {
    return parseBootRecord(text)
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e
    // Named: a bare JSON SyntaxError said neither which file nor what to do.
    throw new BootAgentError('EBADRECORD', `${path} is not JSON (${e.message}): the boot stage writes it whole; pass --boot-record FILE for another, or remove it (the node then runs as not booted by boot-agent)`, { path }, { cause: e })
  }
}
