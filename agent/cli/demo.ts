/**
 * `boot-agent demo` (README command 1, via `npm run demo`): two real disked
 * boots on this machine, end to end, then everything removed.
 *
 * It makes two loop-backed disks carrying ext4 filesystems labelled
 * `bdemo-cache-XXXX` and `bdemo-root-XXXX` (a random suffix per run, so they
 * never collide with anyone's disks), builds a small real squashfs OS tree,
 * publishes it into the reference head node on a loopback port, and runs the
 * real boot stage twice: a cold boot (cache miss: the image is downloaded,
 * verified, unpacked) and, after a simulated reboot, a warm one (cache hit:
 * nothing downloaded). The events the boots spooled are delivered to the head
 * node. Mounts, loop devices, the server and the files are removed in a
 * `finally`, on failure and on Ctrl-C as well.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseBootCmdline } from '../boot/cmdline.js'
import { cachePipeline } from '../boot/pipeline.js'
import { runBootStage, type StageOutcome } from '../boot/stage.js'
import { BootAgentError, messageOf } from '../core/errors.js'
import { Spool } from '../events/spool.js'
import { hostArch } from '../head/names.js'
import { parseNodesConfig } from '../head/nodes-config.js'
import { publishImage } from '../head/publish.js'
import { startHead, type Head } from '../head/server.js'
import { buildManifest, serializeManifest } from '../manifest/index.js'
import { silentLogger } from '../core/log.js'
import { commands } from '../core/system.js'
import { summarise } from './boot.js'
import { type Command, parseCommandArgs } from './command.js'

const exec = promisify(execFile)
const NODE = 'demo-node'
const DISK_MIB = 96
const BLOB_BYTES = 6 * 1024 * 1024
const TOOLS = [commands.losetup, commands.mkfsExt4, commands.mksquashfs, commands.unsquashfs, commands.blkid, commands.mount, commands.umount, commands.findmnt]

const usage = `usage: boot-agent demo [--keep-logs]

Runs two real disked boots on this machine (root needed): loop-device disks with
labelled cache and root partitions, a generated squashfs image served by the reference
head node on 127.0.0.1, a cold boot (cache miss) and a warm one (cache hit). Removes
everything it made when done, also on failure or Ctrl-C. Under a minute.

options:
  --keep-logs   also print the agent's JSON log lines (standard error)`

const which = async (cmd: string): Promise<boolean> =>
  exec('sh', ['-c', 'command -v "$1"', 'sh', cmd]).then(
    () => true,
    () => false,
  )

/** What the demo made, undone in reverse by {@link cleanup}. */
interface Made {
  dir?: string
  loops: string[]
  head?: Head
}

const mountsUnder = async (dir: string): Promise<string[]> => {
  const { stdout } = await exec(commands.findmnt, ['-rn', '-o', 'TARGET']).catch(() => ({ stdout: '' }))
  return stdout.split('\n').filter((m) => m === dir || m.startsWith(dir + '/')).sort((a, b) => b.length - a.length)
}

const loopsBackedBy = async (dir: string): Promise<string[]> => {
  const { stdout } = await exec(commands.losetup, ['-a', '-n', '-O', 'NAME,BACK-FILE', '--raw']).catch(() => ({ stdout: '' }))
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([, back]) => back !== undefined && back.startsWith(dir + '/'))
    .map(([name]) => name ?? '')
}

const cleanup = async (made: Made, say: (l: string) => void): Promise<void> => {
  if (made.head) await made.head.close().catch((e: unknown) => say(`  could not stop the head node: ${messageOf(e)}`))
  if (!made.dir) return
  for (const m of await mountsUnder(made.dir)) {
    await exec(commands.umount, [m]).catch(() => exec(commands.umount, ['-l', m]).catch((e: unknown) => say(`  could not unmount ${m}: ${messageOf(e)}`)))
  }
  for (const dev of new Set([...made.loops, ...(await loopsBackedBy(made.dir))])) {
    await exec(commands.losetup, ['-d', dev]).catch(() => undefined)
  }
  await rm(made.dir, { recursive: true, force: true })
  const leftMounts = await mountsUnder(made.dir)
  const leftLoops = await loopsBackedBy(made.dir)
  say(leftMounts.length || leftLoops.length ? `cleanup: LEFT BEHIND mounts ${leftMounts.join(' ')} loops ${leftLoops.join(' ')}` : 'cleanup: removed the loop devices, mounts, head node and files it made; nothing left behind')
}

const makeDisk = async (made: Made, dir: string, label: string): Promise<string> => {
  const file = join(dir, `${label}.img`)
  await writeFile(file, '')
  await truncate(file, DISK_MIB * 1024 * 1024)
  await exec(commands.mkfsExt4, ['-q', '-F', '-L', label, file])
  const { stdout } = await exec(commands.losetup, ['--find', '--show', file])
  const dev = stdout.trim()
  made.loops.push(dev)
  return dev
}

const makeTree = async (tree: string): Promise<void> => {
  for (const d of ['sbin', 'etc', 'usr/bin', 'usr/share/demo', 'var/log', 'tmp']) await mkdir(join(tree, d), { recursive: true })
  await writeFile(join(tree, 'sbin', 'init'), '#!/bin/sh\n# The demo image\'s init: a real system would exec systemd here.\necho "demo OS up"\nexec /bin/sh\n')
  await chmod(join(tree, 'sbin', 'init'), 0o755)
  await symlink('sbin/init', join(tree, 'init'))
  await writeFile(join(tree, 'etc', 'os-release'), 'NAME="boot-agent demo OS"\nID=bademo\nVERSION_ID="1"\n')
  await writeFile(join(tree, 'etc', 'hostname'), 'compute-demo\n')
  await writeFile(join(tree, 'usr', 'share', 'demo', 'README'), 'Unpacked by boot-agent from a verified, cached squashfs image.\n')
  // Incompressible bytes so the download is visible in the figures.
  await writeFile(join(tree, 'usr', 'share', 'demo', 'payload.bin'), randomBytes(BLOB_BYTES))
}

const deliverEvents = async (head: Head, spoolDir: string): Promise<string> => {
  const spool = new Spool(spoolDir)
  const batch = await spool.peek(1000)
  if (batch.length === 0) {
    // The boot stage delivers its own events before it ends (boot/handoff.ts): say what the head holds.
    const res = await fetch(`${head.url}/v1/nodes/${NODE}`, { signal: AbortSignal.timeout(10_000) })
    const view = (await res.json()) as { events?: number; lastBoot?: { result?: string } | null }
    return `delivered by the boot stage itself: the head node holds ${view.events ?? 0} event(s) for ${NODE} (last boot: ${view.lastBoot?.result ?? 'none'}); nothing left in the spool`
  }
  const res = await fetch(`${head.url}/v1/nodes/${NODE}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ events: batch.map((b) => b.event) }),
    signal: AbortSignal.timeout(10_000),
  })
  const body = await res.text()
  if (!res.ok) return `head node answered ${res.status}: ${body.slice(0, 200)}`
  await spool.remove(batch.map((b) => b.file))
  return `${batch.length} event(s) (${batch.map((b) => b.event.kind).join(', ')}) delivered to the head node: ${body.trim()}`
}

export const command: Command = {
  name: 'demo',
  summary: 'run the local demo: loop disks, head node, two disked boots',
  usage,
  async run(argv, ctx) {
    const { values } = parseCommandArgs('demo', argv, { 'keep-logs': { type: 'boolean' } })
    const say = ctx.out
    if (process.getuid?.() !== 0) throw new BootAgentError('EDEMO', 'the demo needs root (loop devices, mounts); run it as root')
    const missing: string[] = []
    for (const tool of TOOLS) if (!(await which(tool))) missing.push(tool)
    if (missing.length) throw new BootAgentError('EDEMO', `missing tools: ${missing.join(', ')} (scripts/ensure-packages.sh installs them)`)

    const started = performance.now()
    const made: Made = { loops: [] }
    const log = values['keep-logs'] ? ctx.log : silentLogger()
    try {
      made.dir = await mkdtemp(join(tmpdir(), 'ba-demo-'))
      const dir = made.dir
      const suffix = randomBytes(2).toString('hex')
      const cacheLabel = `bdemo-cache-${suffix}`
      const rootLabel = `bdemo-root-${suffix}`
      await mkdir(join(dir, 'disks'))
      const cacheDev = await makeDisk(made, join(dir, 'disks'), cacheLabel)
      const rootDev = await makeDisk(made, join(dir, 'disks'), rootLabel)
      say(`disks: ${cacheDev} (ext4, LABEL=${cacheLabel}, ${DISK_MIB} MiB) and ${rootDev} (ext4, LABEL=${rootLabel}, ${DISK_MIB} MiB) on loop devices`)

      const tree = join(dir, 'tree')
      await makeTree(tree)
      const image = join(dir, 'demo-os.sqfs')
      await exec(commands.mksquashfs, [tree, image, '-noappend', '-quiet', '-no-progress'])
      say(`image: a real squashfs OS tree (${(await readFile(image)).length} bytes) with /sbin/init`)
      ctx.signal.throwIfAborted()

      const store = join(dir, 'head')
      const pub = await publishImage({
        image,
        name: 'demo-os',
        store,
        arch: hostArch(),
        buildManifest: (p, o) => buildManifest(p, o),
        writeManifest: (m) => serializeManifest(m),
        log,
      })
      const nodes = parseNodesConfig({
        schema: 1,
        nodes: { [NODE]: { image: 'demo-os', style: 'disked', partitions: { cache: `LABEL=${cacheLabel}`, root: `LABEL=${rootLabel}` } } },
      })
      made.head = await startHead({ store, nodes, listen: '127.0.0.1:0', log })
      say(`head node: ${made.head.url} serves demo-os sha256:${pub.sha256} to ${NODE}`)

      const cmdline = `rd.bootagent.server=${made.head.url} rd.bootagent.node=${NODE} rd.bootagent.devtimeout=5`
      await writeFile(join(dir, 'cmdline'), cmdline + '\n')
      say(`kernel command line: ${cmdline}`)
      const runDir = join(dir, 'run')
      const sysroot = join(dir, 'sysroot')
      const boot = async (title: string): Promise<StageOutcome> => {
        say('')
        say(`== ${title}`)
        const out = await runBootStage({ cmdline: parseBootCmdline(cmdline), runDir, sysroot, pipeline: cachePipeline, log, signal: ctx.signal })
        for (const l of summarise(out.record, out.recordPath)) say(l)
        if (out.record.result !== 'ok') throw new BootAgentError('EDEMO', `${title} failed: ${out.record.error?.message}`)
        const osr = await readFile(join(sysroot, 'etc', 'os-release'), 'utf8')
        say(`  sysroot    ${sysroot}: ${/^NAME="?([^"\n]*)/m.exec(osr)?.[1] ?? '?'}, marker ${JSON.parse(await readFile(join(sysroot, '.boot-agent-image'), 'utf8')).sha256.slice(0, 16)}…`)
        if (made.head) say(`  events     ${await deliverEvents(made.head, out.record.spoolDir)}`)
        return out
      }

      const cold = await boot('boot 1: cold (empty cache)')
      await writeFile(join(sysroot, 'etc', 'local-change'), 'made after boot 1\n')
      say('')
      say('(wrote /etc/local-change into the running root, then "rebooted": unmounted the root and the cache, emptied the run directory)')
      // The sysroot first: an overlay root holds the root partition and the image mounted under the run directory.
      for (const m of await mountsUnder(sysroot)) await exec(commands.umount, [m])
      for (const m of await mountsUnder(runDir)) await exec(commands.umount, [m])
      await rm(runDir, { recursive: true, force: true })
      ctx.signal.throwIfAborted()

      const warm = await boot('boot 2: warm (image cached)')
      const gone = await readFile(join(sysroot, 'etc', 'local-change')).then(
        () => false,
        () => true,
      )
      say('')
      say(`result: boot 1 ${cold.record.cache.hit ? 'hit' : 'miss'} (${cold.record.bytesFetched} bytes fetched, ${cold.record.timings.total} ms), boot 2 ${warm.record.cache.hit ? 'hit' : 'miss'} (${warm.record.bytesFetched} bytes fetched, ${warm.record.timings.total} ms); same digest ${cold.record.image?.sha256 === warm.record.image?.sha256 ? 'yes' : 'NO'}; local change discarded: ${gone ? 'yes' : 'NO'}`)
      say(`demo took ${Math.round(performance.now() - started)} ms`)
      return cold.record.cache.hit === false && warm.record.cache.hit && gone ? 0 : 1
    } finally {
      say('')
      await cleanup(made, say)
    }
  },
}
