/**
 * Acceptance (build item 3): an error on the unpacked root partition is an
 * `io-error` on that device carrying the booted image's digest. The root is a
 * real ext4 on a loop device (unique label), one directory block overwritten
 * (found with debugfs); listing it makes this kernel log a genuine
 * `EXT4-fs error (device loopN): … Directory block failed checksum`. The boot
 * record names that device as root, as the boot stage writes it.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { runDaemon } from '../../agent/daemon/daemon.js'
import { writePosition } from '../../agent/daemon/state.js'
import { parseBootRecord } from '../../agent/daemon/boot-record.js'
import { startTestHead } from '../helpers/real-head.js'
import { bootId, lastKmsgSeq, waitFor } from './fixtures.js'

const BLOCK = 4096

t.test('an ext4 error on the unpacked root partition reaches the head as an io-error with the booted digest', gate('root', 'loop', 'kmsg'), async (t) => {
  const dir = await mkdtemp('/var/tmp/ba-daemon-root-')
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const img = join(dir, 'root.img')
  await writeFile(img, '')
  execFileSync('truncate', ['-s', '16M', img])
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', String(BLOCK), '-L', `ba-root-${randomBytes(3).toString('hex')}`, img])
  const mnt = join(dir, 'mnt')
  await mkdir(mnt)
  const dev = execFileSync('losetup', ['--find', '--show', img], { encoding: 'utf8' }).trim()
  let mounted = false
  t.teardown(() => {
    if (mounted) execFileSync('umount', [mnt], { stdio: 'ignore' })
    execFileSync('losetup', ['-d', dev], { stdio: 'ignore' })
  })
  execFileSync('mount', [dev, mnt])
  mounted = true
  await mkdir(join(mnt, 'etc'))
  for (let i = 0; i < 50; i++) await writeFile(join(mnt, 'etc', `file${i}`), 'x\n')
  execFileSync('umount', [mnt])
  mounted = false
  const block = Number(execFileSync('debugfs', ['-R', 'blocks /etc', dev], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split(/\s+/)[0])
  t.ok(block > 0, `the directory's block is ${block}`)
  const fh = await open(img, 'r+')
  await fh.write(randomBytes(BLOCK), 0, BLOCK, block * BLOCK)
  await fh.close()
  execFileSync('mount', ['-o', 'ro', dev, mnt])
  mounted = true

  const sha = randomBytes(32).toString('hex')
  const head = await startTestHead(['node-root'])
  t.teardown(() => head.stop())
  const bootRecord = parseBootRecord(JSON.stringify({
    schema: 1, node: 'node-root', server: head.url, style: 'disked', requestedStyle: 'disked', fallbacks: [],
    image: { name: 'CPE-base', sha256: sha, size: 1 }, cache: { spec: null, hit: false, inRam: false },
    root: { spec: 'LABEL=root', device: dev, sysroot: '/sysroot' }, bytesFetched: 0, timings: {}, result: 'ok',
    spoolDir: join(dir, 'boot-spool'), time: new Date().toISOString(),
  }))
  const stateDir = join(dir, 'state')
  await writePosition(stateDir, { bootId: await bootId(), seq: await lastKmsgSeq(), lost: 0, time: '' })
  const ac = new AbortController()
  const daemon = runDaemon({ node: 'node-root', server: head.url, stateDir, bootRecord, pollMs: 50, coalesceWindowMs: 300, heartbeatIntervalMs: 0, sendIntervalMs: 200, signal: ac.signal })
  t.teardown(async () => {
    ac.abort()
    await daemon
  })

  await writeFile('/proc/sys/vm/drop_caches', '3')
  await t.rejects(readdir(join(mnt, 'etc')), 'listing the damaged directory fails')
  const name = dev.replace('/dev/', '')
  const ev = await waitFor(() => head.events().find((e) => e.kind === 'io-error' && e.data.device === name), 5_000)
  t.ok(ev, 'an io-error for the root device arrived within 5 s')
  t.match(ev, { image: { name: 'CPE-base', sha256: sha }, data: { class: 'ext4-error', source: 'ext4', role: 'root', rule: 'message', device: name } })
  t.match(String(ev?.data.message), /^EXT4-fs error \(device loop\d+\)/)
  t.comment(String(ev?.data.message))
})
