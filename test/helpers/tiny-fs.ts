/**
 * A real, tiny file system for disk-full tests: a tmpfs of a few pages
 * mounted on a fresh directory (root only: gate the test with
 * `gate('root')`), unmounted and removed at the test's end. `fill` uses up
 * its space to the last page but `leave` bytes, with a filler file that
 * `free` gives back.
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, open, rm, stat, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isErrno } from '../../agent/core/errors.js'

/** tmpfs allocates whole pages. */
export const PAGE_BYTES = 4096

export interface TinyFs {
  /** The mount point. */
  dir: string
  /** Fills the file system but `leave` bytes (rounded to pages). */
  fill(leave: number): Promise<void>
  /** Gives `bytes` of the filler back (all of it when omitted). */
  free(bytes?: number): Promise<void>
}

interface Teardown {
  teardown(fn: () => unknown): void
}

/** Mounts a tmpfs of `bytes` for test `t` (not under t.testdir(): tap removes that before a teardown could unmount). */
export const tinyFs = async (t: Teardown, bytes: number, name = 'fs'): Promise<TinyFs> => {
  const base = await mkdtemp(join(tmpdir(), 'ba-tiny-fs-'))
  const dir = join(base, name)
  await mkdir(dir)
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0750`, 'tmpfs', dir])
  t.teardown(async () => {
    execFileSync('umount', [dir])
    await rm(base, { recursive: true, force: true })
  })
  const filler = join(dir, '.filler')
  return {
    dir,
    async fill(leave) {
      const fh = await open(filler, 'a')
      const block = Buffer.alloc(PAGE_BYTES, 0x61)
      try {
        for (;;) {
          const { bytesWritten } = await fh.write(block)
          if (bytesWritten < block.length) break
        }
      } catch (e) {
        if (!isErrno(e, 'ENOSPC')) throw e
      } finally {
        await fh.close()
      }
      await truncate(filler, Math.max(0, (await stat(filler)).size - Math.ceil(leave / PAGE_BYTES) * PAGE_BYTES))
    },
    async free(n) {
      if (n === undefined) return rm(filler, { force: true })
      await truncate(filler, Math.max(0, (await stat(filler)).size - n))
    },
  }
}
