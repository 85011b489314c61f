/**
 * Validation of names that arrive from the network or the command line and
 * may become parts of paths in the head node's store (SPEC §12): image names,
 * node ids, digests. Anything that fails is refused, never cleaned up.
 */

// The name checks are part of the protocol (node and head share them); re-exported for the head's callers.
export { MAX_NAME_LENGTH, nameProblem, isSafeName, isSha256 } from '../protocol/names.js'

/** Architectures the head node knows; node-reported values are normalised to these. */
export const ARCHITECTURES = ['x86_64', 'aarch64', 'ppc64le', 'riscv64', 's390x'] as const
export type Architecture = (typeof ARCHITECTURES)[number]

const ARCH_ALIASES: Record<string, Architecture> = {
  x86_64: 'x86_64',
  amd64: 'x86_64',
  x64: 'x86_64',
  aarch64: 'aarch64',
  arm64: 'aarch64',
  ppc64le: 'ppc64le',
  ppc64: 'ppc64le',
  riscv64: 'riscv64',
  s390x: 's390x',
}

/**
 * `record[key]` when `key` is the record's own entry, else `undefined`. Every
 * lookup of an outside name (node id, group, image name, architecture) in a
 * plain object goes through this: `record[key]` alone finds Object.prototype's
 * `constructor`, `toString`, `valueOf`, `hasOwnProperty`… for a name that is
 * not there, and `key in record` says such a name is.
 */
export const ownEntry = <T>(record: Readonly<Partial<Record<string, T>>>, key: string): T | undefined =>
  Object.hasOwn(record, key) ? record[key] : undefined

/** The canonical architecture for a `uname -m`, Debian or Node spelling; `undefined` when unknown. */
export const normaliseArch = (v: unknown): Architecture | undefined =>
  typeof v === 'string' ? ownEntry(ARCH_ALIASES, v.toLowerCase()) : undefined

/** This machine's architecture (the default for `publish --arch`). */
export const hostArch = (): Architecture => normaliseArch(process.arch) ?? 'x86_64'
