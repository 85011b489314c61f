/**
 * The Debian 12 OS image for the VM tests (issue 18): systemd as PID 1 and the
 * agent installed from our own .deb (scripts/build-vm-image.sh, mmdebstrap), and
 * the guest's report disk, through which its test probe (ba-vm-report.service,
 * acting only with `ba.vmtest.report` on the command line) hands back the unit
 * states and `journalctl -b -o json` before it powers off.
 *
 * The image is cached in CACHE_DIR by a hash of its inputs (the .deb's bytes and
 * the build script), like the initramfs.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, open, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { buildOnce, CACHE_DIR, pruneCache, REPO } from './harness.js'

const execFileP = promisify(execFile)

/**
 * The agent's package: BOOT_AGENT_VM_DEB (scripts/test-vm.sh builds it with
 * `npm run package` and sets it), else the newest dist/pkg/boot-agent_*.deb.
 */
export const findPackage = async (): Promise<string> => {
  const forced = process.env.BOOT_AGENT_VM_DEB
  if (forced) return forced
  const dir = join(REPO, 'dist', 'pkg')
  const debs = (await readdir(dir).catch(() => [] as string[])).filter((n) => /^boot-agent_.*\.deb$/.test(n))
  const withTimes = await Promise.all(debs.map(async (n) => ({ p: join(dir, n), t: (await stat(join(dir, n))).mtimeMs })))
  const newest = withTimes.sort((a, b) => b.t - a.t)[0]
  if (newest === undefined) throw new Error(`no boot-agent_*.deb in ${dir}: run npm run package (npm run test:vm does)`)
  return newest.p
}

export interface OsImage {
  path: string
  bytes: number
  built: boolean
  buildMs: number
}

/** Builds (once per .deb and build script) the squashed Debian root with the test probe. */
/**
 * The test-only dracut module (test/vm/dracut/99ba-vmtest: on emergency.target it writes
 * the initramfs journal to the report disk). Every Debian VM file builds its systemd
 * initramfs with it, so they share one cached image (an xz build takes minutes).
 */
export const VM_TEST_MODULE = join(REPO, 'test', 'vm', 'dracut', '99ba-vmtest')

export const buildOsImage = async (deb: string): Promise<OsImage> => {
  const script = join(REPO, 'scripts', 'build-vm-image.sh')
  const h = createHash('sha256').update(await readFile(script)).update(await readFile(deb))
  const out = join(CACHE_DIR, `debian-${h.digest('hex').slice(0, 16)}.squashfs`)
  if (existsSync(out)) {
    const now = new Date()
    await utimes(out, now, now)
    return { path: out, bytes: (await stat(out)).size, built: false, buildMs: 0 }
  }
  await mkdir(CACHE_DIR, { recursive: true })
  const tmp = `${out}.${process.pid}.tmp`
  const t0 = Date.now()
  await buildOnce(out, tmp, ['bash', script, '--deb', deb, '--out', tmp, '--test-probe'])
  await pruneCache('debian-', '.squashfs', out)
  return { path: out, bytes: (await stat(out)).size, built: true, buildMs: Date.now() - t0 }
}

/** The serial the probe looks for: /dev/disk/by-id/virtio-ba-report in the guest. */
export const REPORT_SERIAL = 'ba-report'

/** An empty raw disk for the guest's report. */
export const makeReportDisk = async (path: string, mib = 48): Promise<{ path: string; serial: string }> => {
  await writeFile(path, '')
  const fh = await open(path, 'r+')
  await fh.truncate(mib * 1024 * 1024)
  await fh.close()
  return { path, serial: REPORT_SERIAL }
}

/** One journal entry as `journalctl -o json` prints it (values are strings, or byte arrays for binary). */
export type JournalEntry = Record<string, string | number[] | undefined>

export interface Report {
  /** The probe's first line: `BA-STATE boot-agent.service=… system=… pid1=… waited=…`. */
  state: Record<string, string>
  journal: JournalEntry[]
}

/** Reads what the probe wrote to the report disk (text up to the first NUL). */
export const readReport = async (path: string): Promise<Report | undefined> => {
  const raw = await readFile(path)
  const end = raw.indexOf(0)
  const text = raw.subarray(0, end < 0 ? raw.length : end).toString('utf8')
  if (!text.startsWith('BA-STATE ')) return undefined
  const [first = '', ...rest] = text.split('\n')
  const state: Record<string, string> = {}
  for (const kv of first.slice('BA-STATE '.length).split(' ')) {
    const at = kv.indexOf('=')
    if (at > 0) state[kv.slice(0, at)] = kv.slice(at + 1)
  }
  const journal: JournalEntry[] = []
  for (const line of rest) {
    if (!line.startsWith('{')) continue
    try {
      journal.push(JSON.parse(line) as JournalEntry)
    } catch {
      // A line cut by the disk's end: the rest is whole.
    }
  }
  return { state, journal }
}

/** An entry's MESSAGE as text (journald stores non-UTF-8 or control-character messages as byte arrays). */
export const messageOf = (e: JournalEntry): string => {
  const m = e.MESSAGE
  return typeof m === 'string' ? m : Array.isArray(m) ? Buffer.from(m).toString('utf8') : ''
}

/** `journalctl -o short`-like lines of some entries, for a test's comment. */
export const shortLines = (entries: JournalEntry[]): string =>
  entries.map((e) => `${String(e.SYSLOG_IDENTIFIER ?? '?')}[${String(e._SYSTEMD_UNIT ?? e._TRANSPORT ?? '')}] p${String(e.PRIORITY ?? '?')}: ${messageOf(e)}`).join('\n')
