/**
 * `boot-agent boot`: the initramfs boot stage (the dracut hook runs exactly
 * this), also runnable outside an initramfs with `--cmdline-file`,
 * `--sysroot` and `--run-dir`. Prints a summary for a human (or the boot
 * record with `--json`); the exit code tells the dracut hook what to do
 * (see EXIT_CODES in agent/boot/handoff.ts and the README).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { readBootCmdline } from '../boot/cmdline.js'
import type { BootRecord } from '../boot/handoff.js'
import { cachePipeline } from '../boot/pipeline.js'
import { runBootStage } from '../boot/stage.js'
import { system } from '../core/system.js'
import { type Command, parseCommandArgs } from './command.js'

const usage = `usage: boot-agent boot [--cmdline-file FILE] [--sysroot DIR] [--run-dir DIR] [--json]

Runs the boot stage: reads rd.bootagent.* from the kernel command line (as dracut
does: /etc/cmdline.d/*.conf, /etc/cmdline, /proc/cmdline; later wins), asks the head
node what to boot, mounts the cache and root partitions, makes sure the verified image
is in the cache, and leaves the new root mounted at the sysroot.

options:
  --cmdline-file FILE  read the command line from FILE instead of dracut's sources
                       (a regular file of at most 64 KiB)
  --sysroot DIR        where the new root is mounted (default ${system.sysroot})
  --run-dir DIR        record, spool and work mounts (default ${system.runDir});
                       the cache partition is mounted at DIR/cache
  --json               print the boot record as JSON instead of a summary
  --token-file FILE    this node's bearer token for the head (default ${system.tokenFile},
                       used when present; must be mode 0600 and owned by root;
                       never on the kernel command line: docs/security.md)

exit codes: 0 root ready; 1 failed (onfail=emergency); 2 bad configuration;
            3 failed (onfail=shell); 4 reboot (onfail=reboot, or cache cleared).
The reboot command runs only inside an initramfs (/etc/initrd-release exists) or
with BOOT_AGENT_ALLOW_REBOOT=1; elsewhere the command exits 4 and leaves the machine up.
The keys are documented in README.md ("Kernel command line").`

const MiB = 1024 * 1024
const fmtBytes = (n: number): string => (n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${n} bytes`)

/** The human summary of a boot record. */
export const summarise = (r: BootRecord, recordPath: string): string[] => {
  const lines: string[] = []
  const style = r.style && r.requestedStyle && r.style !== r.requestedStyle ? `${r.style} (requested ${r.requestedStyle})` : (r.style ?? r.requestedStyle ?? '-')
  lines.push(r.result === 'ok' ? `boot: ok, style ${style}` : `boot: FAILED (${r.error?.code}: ${r.error?.message}); action ${r.action}`)
  lines.push(`  node       ${r.node} from ${r.server || '-'}`)
  if (r.image) lines.push(`  image      ${r.image.name} sha256:${r.image.sha256} (${fmtBytes(r.image.size)})`)
  if (r.style) {
    const where = r.cache.inRam ? 'image held in RAM' : `on ${r.cache.spec} (${r.cache.device ?? '?'})`
    lines.push(`  cache      ${r.cache.hit ? 'hit' : 'miss'} ${where}, fetched ${fmtBytes(r.bytesFetched)}`)
  }
  if (r.root.sysroot) lines.push(`  root       ${r.root.device ? `${r.root.spec} (${r.root.device})` : r.style === 'roram' ? 'overlay on the read-only image' : 'tmpfs'} at ${r.root.sysroot}, init ${r.root.init ?? '?'}`)
  if (r.fallbacks.length === 0) lines.push('  fallbacks  none')
  for (const f of r.fallbacks) lines.push(`  fallback   ${f.kind}: ${f.reason}`)
  lines.push(`  timings    ${Object.entries(r.timings).map(([k, v]) => `${k} ${v} ms`).join(', ')}`)
  lines.push(`  record     ${recordPath}; events spooled in ${r.spoolDir}`)
  return lines
}

export const command: Command = {
  name: 'boot',
  summary: 'run the initramfs boot stage: partitions, verified image, root',
  usage,
  async run(argv, ctx) {
    // Start-up cost as seen by the stage: time from process start to the first action.
    const startupMs = Math.round(performance.now())
    const { values } = parseCommandArgs('boot', argv, {
      'cmdline-file': { type: 'string' },
      sysroot: { type: 'string' },
      'run-dir': { type: 'string' },
      json: { type: 'boolean' },
      'token-file': { type: 'string' },
    })
    const runDir = values['run-dir'] ?? system.runDir
    const cmdline = await readBootCmdline(values['cmdline-file'] !== undefined ? { file: values['cmdline-file'] } : {}, {
      warn: (key) => {
        ctx.log.warn({ key }, `unknown kernel command-line key ${key} (ignored)`)
        process.stderr.write(`boot-agent boot: warning: unknown key ${key} ignored\n`)
      },
    })
    const out = await runBootStage({
      cmdline,
      runDir,
      sysroot: values.sysroot ?? system.sysroot,
      cacheMount: values['run-dir'] !== undefined ? join(runDir, 'cache') : system.cacheMount,
      pipeline: cachePipeline,
      log: ctx.log,
      signal: ctx.signal,
      startupMs,
      tokenFile: values['token-file'] ?? system.tokenFile,
      // Outside an initramfs a failed boot never reboots the machine it runs on (exit 4 says so).
      mayReboot: existsSync(system.initrdRelease) || process.env.BOOT_AGENT_ALLOW_REBOOT === '1',
    })
    if (values.json) ctx.out(JSON.stringify(out.record, null, 2))
    else for (const l of summarise(out.record, out.recordPath)) ctx.out(l)
    return out.exitCode
  },
}
