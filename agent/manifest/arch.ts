/**
 * The architecture a manifest's image runs on (`arch`, issue #21), in the
 * kernel's `uname -m` spelling (`x86_64`, `aarch64`, …: what the head's
 * nodes file and descriptors use), and whether this machine can run it.
 */
import { BootAgentError } from '../core/errors.js'

/** What an `arch` value may look like on the wire: a short lower-case token. */
export const ARCH_RE = /^[a-z][a-z0-9_]{0,31}$/

/** Node's `process.arch` → `uname -m` (the spelling manifests carry). */
const FROM_NODE: Readonly<Record<string, string>> = { x64: 'x86_64', arm64: 'aarch64', ppc64: 'ppc64le', riscv64: 'riscv64', s390x: 's390x', ia32: 'i686', arm: 'armv7l' }

/** This machine's architecture as manifests name it. */
export const machineArch = (nodeArch: string = process.arch): string => (Object.hasOwn(FROM_NODE, nodeArch) ? (FROM_NODE[nodeArch] as string) : nodeArch)

/**
 * Refuses a manifest whose image is for another architecture than `expected`
 * (EARCH), before any byte of it is fetched. A manifest without `arch`
 * (written before the field) is accepted: nothing says it is wrong.
 */
export const checkArch = (m: { name: string; sha256: string; arch?: string }, expected: string, url?: string): void => {
  if (m.arch === undefined || m.arch === expected) return
  throw new BootAgentError(
    'EARCH',
    `image ${m.name} (sha256 ${m.sha256}) is built for ${m.arch}, and this machine is ${expected}${url ? ` (${url})` : ''}: refusing it; publish an image for ${expected}, or (fetch) pass --arch ${m.arch} to fetch it anyway`,
    { manifest: m.name, sha256: m.sha256, arch: m.arch, expected, ...(url ? { url } : {}) },
  )
}
