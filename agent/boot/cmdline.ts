/**
 * The boot stage's configuration from the kernel command line (SPEC §3), read
 * the way dracut reads it: `/etc/cmdline.d/*.conf`, then `/etc/cmdline`, then
 * `/proc/cmdline`, concatenated; for a key given more than once the last one
 * wins. `--cmdline-file FILE` replaces all three (tests, the demo).
 *
 * Every `rd.bootagent.*` key is parsed here into a typed value or a
 * ConfigError naming the key; unknown `rd.bootagent.*` keys are warned about
 * once each. Values not given stay `undefined` so the head node's descriptor
 * can supply them (command-line values win over the descriptor's).
 */
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError, isErrno } from '../core/errors.js'
import { system } from '../core/system.js'
import { readCappedText, type CappedRead } from '../core/read-capped.js'

export const BOOT_STYLES = ['disked', 'rwram', 'roram'] as const
export type BootStyle = (typeof BOOT_STYLES)[number]
export const ONFAIL_ACTIONS = ['reboot', 'emergency', 'shell'] as const
export type OnFail = (typeof ONFAIL_ACTIONS)[number]
export const CACHE_FULL_POLICIES = ['ram', 'clear-reboot'] as const
export type CacheFullPolicy = (typeof CACHE_FULL_POLICIES)[number]
export const VERIFY_MODES = ['fast', 'strong'] as const
export type VerifyMode = (typeof VERIFY_MODES)[number]
/** Style used when the root partition cannot be used (SPEC §2: rwram, or roram when configured). */
export const RAM_STYLES = ['rwram', 'roram'] as const
export type RamStyle = (typeof RAM_STYLES)[number]
/** How `disked` makes the root (`rd.bootagent.rootmode`): mount the verified image under an overlay, or unpack it (ClusterWare's way). */
export const ROOT_MODES = ['overlay', 'unpack'] as const
export type RootMode = (typeof ROOT_MODES)[number]

/** A partition named the way `mount` accepts it. */
export type PartitionSpec =
  | { kind: 'label' | 'uuid' | 'partlabel' | 'partuuid'; value: string; text: string }
  | { kind: 'path'; value: string; text: string }

/** Which partitions the agent may create a filesystem on (`rd.bootagent.format`). */
export interface FormatPolicy {
  cache: boolean
  root: boolean
}

export interface BootCmdline {
  /** Head node base URL (`rd.bootagent.server`), normalised without a trailing slash. */
  server?: string
  node?: string
  style?: BootStyle
  /** `null` means explicitly "no cache partition" (`rd.bootagent.cache=none`). */
  cache?: PartitionSpec | null
  root?: PartitionSpec | null
  verify?: VerifyMode
  /** Path of a PEM ed25519 public key; manifests must then be signed by it. */
  pubkey?: string
  onfail?: OnFail
  format?: FormatPolicy
  cacheFull?: CacheFullPolicy
  ramStyle?: RamStyle
  /** `disked` only: overlay (image mounted, changes on the root partition) or unpack. */
  rootMode?: RootMode
  /** How long to wait for a partition's device to appear. */
  deviceTimeoutMs?: number
  /** Deadline of each HTTP request (descriptor, manifest). */
  httpTimeoutMs?: number
  /** Wait before `rd.bootagent.onfail=reboot` reboots. */
  rebootDelayMs?: number
  /** Parallel Range requests for the image (`rd.bootagent.streams`, 1–16). */
  streams?: number
}

export const DEFAULT_DEVICE_TIMEOUT_MS = 10_000
export const DEFAULT_HTTP_TIMEOUT_MS = 30_000
export const DEFAULT_REBOOT_DELAY_MS = 30_000
const MAX_TIMEOUT_S = 3600

export const KEY_PREFIX = 'rd.bootagent.'

/** Every known key (without the prefix), with its parser. */
const KNOWN_KEYS = [
  'server',
  'node',
  'style',
  'cache',
  'root',
  'verify',
  'pubkey',
  'onfail',
  'format',
  'cachefull',
  'ramstyle',
  'rootmode',
  'devtimeout',
  'timeout',
  'rebootdelay',
  'streams',
] as const
type KnownKey = (typeof KNOWN_KEYS)[number]
/** Every known key, without the prefix: boot-agent-cmdline(7) documents each (test/package/man.test.ts). */
export const CMDLINE_KEYS: readonly string[] = KNOWN_KEYS

/**
 * Splits a command line into parameters as the kernel does: whitespace
 * separates, double quotes group (and are removed), `key="a b"` is one
 * parameter `key=a b`. dracut additionally accepts single quotes; so do we.
 */
export const splitCmdline = (text: string): string[] => {
  const out: string[] = []
  let cur = ''
  let inToken = false
  let quote: '"' | "'" | undefined
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = undefined
      else cur += ch
      continue
    }
    if (ch === '"' || ch === "'") {
      quote = ch
      inToken = true
      continue
    }
    if (/\s/.test(ch)) {
      if (inToken) out.push(cur)
      cur = ''
      inToken = false
      continue
    }
    cur += ch
    inToken = true
  }
  if (inToken) out.push(cur)
  return out
}

/** `key=value` pairs in order; a bare `key` has value `undefined`. */
export const parseParams = (text: string): Array<[string, string | undefined]> =>
  splitCmdline(text).map((p) => {
    const eq = p.indexOf('=')
    return eq < 0 ? [p, undefined] : [p.slice(0, eq), p.slice(eq + 1)]
  })

/** Largest `--cmdline-file` (the kernel's command line is at most 4 KiB on x86-64; dracut's .conf files add a little). */
export const MAX_CMDLINE_FILE_BYTES = 64 * 1024

export interface CmdlineSources {
  /** Read only this file instead of dracut's three sources. */
  file?: string
  /** Directories and files (defaults from agent/core/system.ts). */
  etcCmdlineDir?: string
  etcCmdline?: string
  procCmdline?: string
}

const readIfExists = async (path: string): Promise<string> => {
  try {
    return await readFile(path, 'utf8')
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENOTDIR')) return ''
    throw e
  }
}

/**
 * The concatenated command line, in dracut's order (later wins). Lines of the
 * `.conf` files starting with `#` are comments.
 */
export const readCmdlineText = async (src: CmdlineSources = {}): Promise<string> => {
  if (src.file !== undefined) {
    let got: CappedRead
    try {
      got = await readCappedText(src.file, MAX_CMDLINE_FILE_BYTES)
    } catch (e) {
      throw new ConfigError('--cmdline-file', `cannot read ${src.file}: ${(e as Error).message}`)
    }
    if (got.kind === 'not-regular') throw new ConfigError('--cmdline-file', `${src.file} is ${got.type}; give a regular file holding a kernel command line`)
    if (got.kind === 'too-large') throw new ConfigError('--cmdline-file', `${src.file} is larger than ${got.maxBytes} bytes: not a kernel command line (the kernel's own is at most a few KiB)`)
    return got.text
  }
  const dir = src.etcCmdlineDir ?? system.etcCmdlineDir
  const parts: string[] = []
  let confs: string[] = []
  try {
    confs = (await readdir(dir)).filter((f) => f.endsWith('.conf')).sort()
  } catch (e) {
    if (!isErrno(e, 'ENOENT', 'ENOTDIR')) throw e
  }
  for (const f of confs) {
    const text = await readIfExists(join(dir, f))
    parts.push(...text.split('\n').filter((l) => !l.trimStart().startsWith('#')))
  }
  parts.push(await readIfExists(src.etcCmdline ?? system.etcCmdline))
  parts.push(await readIfExists(src.procCmdline ?? system.procCmdline))
  return parts.join(' ')
}

const oneOf = <T extends string>(key: string, value: string, allowed: readonly T[]): T => {
  if ((allowed as readonly string[]).includes(value)) return value as T
  throw new ConfigError(key, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`)
}

const SPEC_PREFIXES: Array<[string, 'label' | 'uuid' | 'partlabel' | 'partuuid']> = [
  ['LABEL=', 'label'],
  ['UUID=', 'uuid'],
  ['PARTLABEL=', 'partlabel'],
  ['PARTUUID=', 'partuuid'],
]

/** A partition spec as `mount` accepts it, or a ConfigError naming `key`. `none` → `null`. */
export const parsePartitionSpec = (key: string, value: string): PartitionSpec | null => {
  if (value === 'none') return null
  for (const [prefix, kind] of SPEC_PREFIXES) {
    if (value.startsWith(prefix)) {
      const v = value.slice(prefix.length)
      if (!v || /[\s/\0]/.test(v)) throw new ConfigError(key, `bad ${prefix.slice(0, -1)} in partition spec ${JSON.stringify(value)}`)
      if ((kind === 'uuid' || kind === 'partuuid') && !/^[0-9A-Fa-f-]+$/.test(v)) {
        throw new ConfigError(key, `${prefix.slice(0, -1)} must be hexadecimal digits and dashes (got ${JSON.stringify(v)})`)
      }
      return { kind, value: v, text: value }
    }
  }
  if (/^\/dev\/[A-Za-z0-9._\-/:]+$/.test(value) && !value.split('/').includes('..')) {
    return { kind: 'path', value, text: value }
  }
  throw new ConfigError(
    key,
    `not a partition spec: ${JSON.stringify(value)} (use LABEL=, UUID=, PARTLABEL=, PARTUUID=, a /dev/ path, or none)`,
  )
}

/** An http(s) base URL without credentials, query or fragment; normalised without a trailing slash. */
export const parseServerUrl = (key: string, value: string): string => {
  let u: URL
  try {
    u = new URL(value)
  } catch {
    throw new ConfigError(key, `not a URL: ${JSON.stringify(value)}`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(key, `must be an http:// or https:// URL (got ${u.protocol})`)
  if (u.username || u.password) throw new ConfigError(key, 'must not carry credentials')
  if (u.search || u.hash) throw new ConfigError(key, 'must not carry a query or fragment')
  return u.toString().replace(/\/+$/, '')
}

const parseSeconds = (key: string, value: string): number => {
  if (!/^\d+(\.\d+)?$/.test(value)) throw new ConfigError(key, `must be a number of seconds (got ${JSON.stringify(value)})`)
  const s = Number(value)
  if (s > MAX_TIMEOUT_S) throw new ConfigError(key, `must be at most ${MAX_TIMEOUT_S} seconds (got ${value})`)
  return Math.round(s * 1000)
}

const parseFormat = (key: string, value: string): FormatPolicy => {
  const parts = value.split(',').filter(Boolean)
  const out: FormatPolicy = { cache: false, root: false }
  for (const p of parts) {
    if (p === 'none') continue
    if (p === 'cache') out.cache = true
    else if (p === 'root') out.root = true
    else throw new ConfigError(key, `must be none or a comma list of cache, root (got ${JSON.stringify(value)})`)
  }
  if (parts.length === 0) throw new ConfigError(key, 'must be none or a comma list of cache, root (got an empty value)')
  return out
}

/** Most parallel Range requests a boot may open (`rd.bootagent.streams`, the descriptor's `policies.streams`). */
export const MAX_BOOT_STREAMS = 16

/** A count of parallel streams in 1..{@link MAX_BOOT_STREAMS}, or a ConfigError naming `key`. */
export const parseStreams = (key: string, value: string): number => {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 1 || n > MAX_BOOT_STREAMS) throw new ConfigError(key, `must be a whole number from 1 to ${MAX_BOOT_STREAMS} (got ${JSON.stringify(value)})`)
  return n
}

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/

/** Checks a node id is safe in a URL path segment. */
export const parseNodeId = (key: string, value: string): string => {
  if (!NODE_ID.test(value)) {
    throw new ConfigError(key, `must be 1–128 letters, digits, '.', '_', ':' or '-' starting with a letter or digit (got ${JSON.stringify(value)})`)
  }
  return value
}

const setKey = (cfg: BootCmdline, key: KnownKey, full: string, value: string): void => {
  switch (key) {
    case 'server':
      cfg.server = parseServerUrl(full, value)
      return
    case 'node':
      cfg.node = parseNodeId(full, value)
      return
    case 'style':
      cfg.style = oneOf(full, value, BOOT_STYLES)
      return
    case 'cache':
      cfg.cache = parsePartitionSpec(full, value)
      return
    case 'root':
      cfg.root = parsePartitionSpec(full, value)
      return
    case 'verify':
      cfg.verify = oneOf(full, value, VERIFY_MODES)
      return
    case 'pubkey':
      if (!value.startsWith('/') || value.split('/').includes('..')) throw new ConfigError(full, `must be an absolute file path (got ${JSON.stringify(value)})`)
      cfg.pubkey = value
      return
    case 'onfail':
      cfg.onfail = oneOf(full, value, ONFAIL_ACTIONS)
      return
    case 'format':
      cfg.format = parseFormat(full, value)
      return
    case 'cachefull':
      cfg.cacheFull = oneOf(full, value, CACHE_FULL_POLICIES)
      return
    case 'ramstyle':
      cfg.ramStyle = oneOf(full, value, RAM_STYLES)
      return
    case 'rootmode':
      cfg.rootMode = oneOf(full, value, ROOT_MODES)
      return
    case 'devtimeout':
      cfg.deviceTimeoutMs = parseSeconds(full, value)
      return
    case 'timeout':
      cfg.httpTimeoutMs = parseSeconds(full, value)
      // 0 ms: every request would time out at once, and the boot fail naming no key.
      if (cfg.httpTimeoutMs === 0) throw new ConfigError(full, `must be more than 0 seconds: it is how long each request to the head may take (got ${JSON.stringify(value)})`)
      return
    case 'rebootdelay':
      cfg.rebootDelayMs = parseSeconds(full, value)
      return
    case 'streams':
      cfg.streams = parseStreams(full, value)
      return
  }
}

/**
 * Key names that would carry a secret. Refused, not ignored: /proc/cmdline is
 * readable by every user of the node and the boot loader's config by whoever
 * serves it, so the secret is already exposed and must be rotated
 * (docs/security.md). The message never repeats the value.
 */
const SECRET_KEY = /token|secret|passw|credential/i

export interface ParseOptions {
  /** Called once per unknown `rd.bootagent.*` key. */
  warn?: (key: string) => void
}

/**
 * Parses the `rd.bootagent.*` keys of a command line. The last occurrence of
 * a key wins (and only it is validated, as only it is used).
 */
export const parseBootCmdline = (text: string, opts: ParseOptions = {}): BootCmdline => {
  const last = new Map<KnownKey, string | undefined>()
  const warned = new Set<string>()
  for (const [k, v] of parseParams(text)) {
    if (!k.startsWith(KEY_PREFIX)) continue
    const name = k.slice(KEY_PREFIX.length)
    if (SECRET_KEY.test(name)) {
      throw new ConfigError(k, 'a token on the kernel command line is readable by every user of the node (/proc/cmdline): refused; put it in /etc/boot-agent/token (mode 0600, root), rebuild the initramfs, and rotate the exposed token (docs/security.md)')
    }
    if ((KNOWN_KEYS as readonly string[]).includes(name)) {
      last.delete(name as KnownKey) // keep insertion order = order of the winning value
      last.set(name as KnownKey, v)
    } else if (!warned.has(k)) {
      warned.add(k)
      opts.warn?.(k)
    }
  }
  const cfg: BootCmdline = {}
  for (const [name, v] of last) {
    const full = KEY_PREFIX + name
    if (v === undefined || v === '') throw new ConfigError(full, 'needs a value (write it as key=value)')
    setKey(cfg, name, full, v)
  }
  return cfg
}

/** Reads and parses the command line from its sources. */
export const readBootCmdline = async (src: CmdlineSources = {}, opts: ParseOptions = {}): Promise<BootCmdline> =>
  parseBootCmdline(await readCmdlineText(src), opts)
