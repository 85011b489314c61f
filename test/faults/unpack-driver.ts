/**
 * The disked boot's root step (agent/boot/roots.ts prepareDisked: wipe,
 * unsquashfs, move up, find the init, write the marker) as a process of its
 * own, so the kill campaign can SIGKILL it at the unpack's kill points. Bundled
 * by the campaign with esbuild (test/faults/kill-points.test.ts). Real
 * unsquashfs; the one stand-in: `mount --bind` onto the sysroot and the
 * `umount` after it are skipped (the campaign's root is a plain directory, and
 * the bind is not what is under test).
 *
 * usage: node unpack-driver.mjs IMAGE ROOT_DIR SHA256 SIZE
 */
import { prepareDisked } from '../../agent/boot/roots.js'
import type { BootPlan } from '../../agent/boot/plan.js'
import { run, type Runner } from '../../agent/core/exec.js'
import { commands } from '../../agent/core/system.js'

const args = process.argv.slice(2)
// Run without its arguments (tap given the whole directory): say so and do nothing.
if (args.length !== 4) {
  process.stdout.write('# unpack-driver.ts is run by kill-points.test.ts, not alone\n')
} else await unpack(args as [string, string, string, string])

async function unpack([image, root, sha256, size]: [string, string, string, string]): Promise<void> {
  const plan = {
    style: 'disked',
    image: { name: 'img', sha256, size: Number(size), manifest: 'http://head/m' },
    root: { mode: 'partition', spec: 'LABEL=root', device: '/dev/null', mountpoint: root },
    // The unpack root mode is the one whose kill points this campaign covers (overlay: test/boot/overlay.test.ts).
    policies: { rootMode: 'unpack' },
  } as unknown as BootPlan
  const noMounts: Runner = (cmd, args, opts) =>
    cmd === commands.mount || cmd === commands.umount ? Promise.resolve({ exitCode: 0, signal: null, stdout: '', stderr: '' }) : run(cmd, args, opts)
  const r = await prepareDisked(plan, image, { run: noMounts, runDir: `${root}.run`, sysroot: `${root}.sysroot` })
  process.stdout.write(JSON.stringify(r) + '\n')
}
