/**
 * Capability gates for tests that need real parts of the machine.
 *
 * On a developer's laptop a missing capability skips the test with a message
 * saying what is missing. Under CI=true it is a failure: CI must never go
 * green by skipping what it was meant to check.
 */
import t from 'tap'
import { accessSync, constants, existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

export type Capability = 'root' | 'loop' | 'kmsg' | 'nginx' | 'squashfs-tools' | 'qemu' | 'casync' | 'xxhsum' | 'openssl' | 'vm'
  | 'dpkg-deb' | 'lintian' | 'man' | 'rpmbuild' | 'systemd-notify'

const which = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

const probes: Record<Capability, () => string | undefined> = {
  root: () => (process.getuid?.() === 0 ? undefined : 'needs root'),
  loop: () => (existsSync('/dev/loop-control') && which('losetup') ? undefined : 'needs loop devices (/dev/loop-control, losetup)'),
  kmsg: () => {
    try {
      accessSync('/dev/kmsg', constants.R_OK | constants.W_OK)
      return undefined
    } catch {
      return 'needs read/write access to /dev/kmsg'
    }
  },
  nginx: () => (which('nginx') || existsSync('/usr/sbin/nginx') ? undefined : 'needs nginx (Debian package nginx-light)'),
  'squashfs-tools': () => (which('mksquashfs') && which('unsquashfs') ? undefined : 'needs mksquashfs/unsquashfs (squashfs-tools)'),
  qemu: () => (which('qemu-system-x86_64') ? undefined : 'needs qemu-system-x86_64 (qemu-system-x86)'),
  casync: () => (which('casync') ? undefined : 'needs casync'),
  xxhsum: () => (which('xxhsum') ? undefined : 'needs xxhsum (xxhash)'),
  openssl: () => (which('openssl') ? undefined : 'needs the openssl command (Debian package openssl)'),
  vm: () => (process.env.BOOT_AGENT_TEST_VM === '0' ? 'VM tests switched off by --no-vm' : undefined),
  'dpkg-deb': () => (['dpkg-deb', 'dpkg-shlibdeps', 'strip'].every(which) ? undefined : 'needs dpkg-deb, dpkg-shlibdeps, strip (dpkg-dev, binutils)'),
  lintian: () => (which('lintian') ? undefined : 'needs lintian'),
  man: () => (which('man') ? undefined : 'needs man (man-db)'),
  rpmbuild: () => (which('rpmbuild') ? undefined : 'needs rpmbuild (Debian package rpm)'),
  'systemd-notify': () => (which('systemd-notify') && which('python3') ? undefined : 'needs systemd-notify (systemd) and python3 (the stand-in notify socket)'),
}

export const inCI = (): boolean => process.env.CI === 'true'

/**
 * Returns `{ skip }` for `t.test(name, gate('root', 'loop'), fn)`. Under CI a
 * missing capability (other than a deliberate --no-vm) also registers a
 * failing test in the file, naming what is missing.
 */
export const gate = (...caps: Capability[]): { skip: string | false } => {
  const missing = caps.map((c) => [c, probes[c]()] as const).filter(([, why]) => why !== undefined)
  if (missing.length === 0) return { skip: false }
  const why = missing.map(([, w]) => w).join('; ')
  if (inCI() && missing.some(([c]) => c !== 'vm')) {
    t.fail(`capability missing under CI=true: ${why}`)
  }
  return { skip: why }
}
