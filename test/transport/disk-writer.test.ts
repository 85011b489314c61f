/**
 * Disk writes (agent/transport/disk-writer.ts): every write complete
 * (short writes continued), O_DIRECT for the aligned middle where the file
 * system takes it, a full file system handed to `noSpace` (the cache's
 * reserve, in the download) and the write continued, and the disk's own
 * failures typed as LocalIoError. ENOSPC is the kernel's, from a real tiny
 * tmpfs (root only).
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ioBuffer } from '../../agent/core/io-buffer.js'
import { BootAgentError, CacheFullError } from '../../agent/core/errors.js'
import { silentLogger } from '../../agent/core/log.js'
import { DIRECT_ALIGN, DiskWriter, LocalIoError, local } from '../../agent/transport/disk-writer.js'
import { gate } from '../helpers/capability.js'
import { seededBytes } from '../helpers/image.js'

const KiB = 1024
const MiB = 1024 * KiB

const noSpaceNever = async () => {
  throw new Error('not expected: noSpace')
}

/** `data` in page-aligned memory congruent to `pos` modulo a page, as ChunkWriter hands it over. */
const alignedTo = (data: Buffer, pos: number): Buffer => {
  const lead = pos % DIRECT_ALIGN
  const mem = ioBuffer(data.length + DIRECT_ALIGN)
  data.copy(mem, lead)
  return mem.subarray(lead, lead + data.length)
}

t.test('a large unaligned run lands byte for byte (O_DIRECT middle where the file system takes it)', async (t) => {
  const path = join(t.testdir(), 'part')
  const fh = await open(path, 'w+')
  t.teardown(() => fh.close())
  await fh.truncate(4 * MiB)
  const w = new DiskWriter({ fh, path, log: silentLogger(), noSpace: noSpaceNever })
  const data = seededBytes(2 * MiB + 1234, 'direct')
  const pos = 1000
  await w.write(alignedTo(data, pos), pos)
  await w.write(alignedTo(data.subarray(0, 10 * KiB), 3 * MiB), 3 * MiB) // small: through the page cache
  await w.close()
  const got = await readFile(path)
  t.same(got.subarray(pos, pos + data.length), data, 'the run')
  t.same(got.subarray(3 * MiB, 3 * MiB + 10 * KiB), data.subarray(0, 10 * KiB), 'the small write')
  t.ok(got.subarray(0, pos).every((x) => x === 0), 'nothing before it')
})

t.test('short writes are continued until every byte is written', async (t) => {
  const path = join(t.testdir(), 'part')
  const real = await open(path, 'w+')
  t.teardown(() => real.close())
  let calls = 0
  const stingy = {
    write: async (b: Uint8Array, off: number, len: number, pos: number) => {
      calls++
      return real.write(b, off, Math.min(len, 1000), pos)
    },
  } as unknown as FileHandle
  const w = new DiskWriter({ fh: stingy, path, log: silentLogger(), noSpace: noSpaceNever })
  const data = seededBytes(10_500, 'short')
  await w.writeBuffered(data, 7)
  t.equal(calls, 11, 'eleven writes of at most 1000 bytes')
  t.same((await readFile(path)).subarray(7), data)
})

t.test('a full file system: noSpace is asked (attempt 1, 2, …) and the write goes on once room is made', gate('root'), async (t) => {
  const mnt = await mkdtemp(join(tmpdir(), 'ba-disk-writer-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'ba-disk-writer-test', mnt])
  t.teardown(() => {
    execFileSync('umount', ['-l', mnt])
    rmSync(mnt, { recursive: true, force: true })
  })
  const filler = join(mnt, 'filler')
  await writeFile(filler, Buffer.alloc(700 * KiB))
  const path = join(mnt, 'part')
  const fh = await open(path, 'w+')
  t.teardown(() => fh.close())
  const asked: [number, number][] = []
  const w = new DiskWriter({
    fh,
    path,
    log: silentLogger(),
    noSpace: async (left, attempt) => {
      asked.push([left, attempt])
      if (attempt === 2) await rm(filler) // the second time, room is made
    },
  })
  const data = seededBytes(600 * KiB, 'full')
  await w.writeBuffered(data, 0)
  t.equal(asked.length >= 2, true, `asked ${asked.length} times`)
  t.same(asked.map(([, a]) => a).slice(0, 2), [1, 2], 'attempts counted')
  t.ok(asked.every(([left]) => left > 0 && left <= data.length), 'with the bytes still to write')
  t.same(await readFile(path), data, 'then every byte written')

  await fh.truncate(0)
  await writeFile(filler, Buffer.alloc(900 * KiB))
  const full = new CacheFullError({ needed: 1, available: 0, dir: mnt })
  const refusing = new DiskWriter({ fh, path, log: silentLogger(), noSpace: async () => Promise.reject(full) })
  await t.rejects(refusing.writeBuffered(seededBytes(600 * KiB, 'again'), 0), full, 'noSpace giving up ends the write with its error')
})

t.test('local(): an untyped failure is a LocalIoError naming the job; typed errors and aborts pass through', async (t) => {
  const eio = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' })
  const e = await local('writing /x.part', async () => Promise.reject(eio)).catch((x: unknown) => x)
  t.type(e, LocalIoError)
  t.match(e, { code: 'ELOCALIO', message: 'writing /x.part: EIO: i/o error, write', context: { errno: 'EIO' }, cause: eio })
  const typed = new BootAgentError('EBADSIZE', 'short')
  await t.rejects(local('x', async () => Promise.reject(typed)), typed)
  const abort = Object.assign(new Error('aborted'), { name: 'AbortError' })
  await t.rejects(local('x', async () => Promise.reject(abort)), abort)
  t.equal(await local('x', async () => 42), 42)
})
