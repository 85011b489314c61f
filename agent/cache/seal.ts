/**
 * fs-verity sealing of cache objects (issue #19, docs/cache.md "Sealed objects").
 *
 * Where the cache's filesystem supports fs-verity (ext4 with the `verity`
 * feature, a kernel with CONFIG_FS_VERITY), an object is sealed after its first
 * full verification: the kernel builds a Merkle tree of its blocks, the file
 * becomes read-only for good, and every later read of a block is checked
 * against that tree (a changed block reads as EIO). A hit then needs no data
 * read at all: the kernel's measured digest of the file, compared with the
 * manifest's `fsverityDigest`, says that these are the published bytes.
 *
 * Node has no ioctl: the `fsverity` tool (Debian package fsverity) does the
 * two ioctls, FS_IOC_ENABLE_VERITY and FS_IOC_MEASURE_VERITY. Without the tool,
 * or on a filesystem without fs-verity, nothing is sealed and a hit is checked
 * by reading (fast or strong verify), as before.
 */
import { isErrno, messageOf } from '../core/errors.js'
import { run as defaultRun, type Runner } from '../core/exec.js'
import { commands } from '../core/system.js'

/** What the kernel says of one object. */
export type SealState = { sealed: true; digest: string } | { sealed: false; why: string }

/** What sealing did. */
export type SealOutcome = 'sealed' | 'already sealed' | `not sealed: ${string}`

/** How a cache hit is checked. */
export type HitCheck = { kind: 'measured' } | { kind: 'read'; why: string }

/** `fsverity measure` and `enable` may take a while on a large file under load; they never hang a boot. */
const FSVERITY_TIMEOUT_MS = 10 * 60_000

/** The hex digest in `fsverity measure`'s line `sha256:<64 hex> <path>` (pure); undefined for any other text. */
export const parseMeasure = (stdout: string): string | undefined => /^sha256:([0-9a-f]{64}) /.exec(stdout)?.[1]

/** Why a `fsverity` run failed, in one line (its `ERROR: …` line, else the exit code). */
const failure = (stderr: string, code: number | null): string => stderr.split('\n').find((l) => l.startsWith('ERROR:'))?.slice('ERROR: '.length).trim() ?? `fsverity exited ${code}`

/**
 * Which check a hit of an object gets (pure): by measurement only when the
 * manifest carries a digest, the kernel measured the object as sealed, the two
 * agree, and nothing marked chunks of it corrupt (a block the kernel refused at
 * run time: the tree is intact, the data is not, so it must be read to find
 * the bad chunks). Anything else: read it (fast or strong verify).
 */
export const chooseHitCheck = (o: { published: string | undefined; measured: SealState; corruptChunks: number }): HitCheck => {
  if (!o.published) return { kind: 'read', why: 'the manifest carries no fsverityDigest' }
  if (!o.measured.sealed) return { kind: 'read', why: `not sealed (${o.measured.why})` }
  if (o.measured.digest !== o.published) return { kind: 'read', why: `measured fs-verity digest ${o.measured.digest} is not the manifest's ${o.published}` }
  if (o.corruptChunks > 0) return { kind: 'read', why: `sealed, but ${o.corruptChunks} chunk(s) marked corrupt at run time` }
  return { kind: 'measured' }
}

/**
 * Seals and measures objects with the `fsverity` tool. Remembers, for the
 * life of the process, that sealing is impossible here (no tool, a filesystem
 * without fs-verity), so a cache without it pays for one failed run only.
 */
export class Sealer {
  private unsupported: string | undefined

  constructor(private readonly run: Runner = defaultRun) {}

  /** Why objects cannot be sealed here, once a run has shown it (else undefined). */
  get cannotSeal(): string | undefined {
    return this.unsupported
  }

  /** The kernel's measured fs-verity digest of `path`, or why there is none (not sealed, unsupported, no tool). */
  async measure(path: string): Promise<SealState> {
    if (this.unsupported) return { sealed: false, why: this.unsupported }
    const r = await this.tool(['measure', path])
    if (typeof r === 'string') return { sealed: false, why: r }
    const digest = parseMeasure(r.stdout)
    return digest ? { sealed: true, digest } : { sealed: false, why: r.why ?? `unexpected fsverity output ${JSON.stringify(r.stdout.slice(0, 80))}` }
  }

  /** Seals `path` (it must have no writer open). Never throws: the outcome says what happened. */
  async seal(path: string): Promise<SealOutcome> {
    if (this.unsupported) return `not sealed: ${this.unsupported}`
    const r = await this.tool(['enable', path])
    if (typeof r === 'string') return `not sealed: ${r}`
    if (r.why === undefined) return 'sealed'
    if (/File exists/.test(r.why)) return 'already sealed'
    return `not sealed: ${r.why}`
  }

  /** One run of the tool: its output, or why it cannot work here at all (then remembered). */
  private async tool(args: string[]): Promise<{ stdout: string; why?: string } | string> {
    try {
      const r = await this.run(commands.fsverity, args, { allowFailure: true, timeoutMs: FSVERITY_TIMEOUT_MS })
      if (r.exitCode === 0) return { stdout: r.stdout }
      const why = failure(r.stderr, r.exitCode)
      // EOPNOTSUPP (no fs-verity on this filesystem or kernel) and ENOTTY (no such ioctl) hold for every file.
      if (/Operation not supported|Inappropriate ioctl/.test(why)) return (this.unsupported = `the cache filesystem has no fs-verity (${why})`)
      return { stdout: r.stdout, why }
    } catch (e) {
      // The tool is not installed (ENOENT from spawn, wrapped as ECOMMAND).
      if (isErrno(e, 'ECOMMAND', 'ENOENT')) return (this.unsupported = `no ${commands.fsverity} tool (${messageOf(e)})`)
      return messageOf(e)
    }
  }
}
