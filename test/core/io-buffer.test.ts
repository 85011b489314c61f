import t from 'tap'
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { ioBuffer } from '../../agent/core/io-buffer.js'

/** Writes `buf` to `path` with O_DIRECT: the kernel refuses (EINVAL) a buffer not aligned to the block size. */
const directWrite = (path: string, buf: Buffer): number | string => {
  let fd: number
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT, 0o644)
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'error'
  }
  try {
    return writeSync(fd, buf, 0, buf.length, 0)
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'error'
  } finally {
    closeSync(fd)
  }
}

t.test('the buffer has exactly the bytes asked for, zero-filled, from the start of its memory', async (t) => {
  for (const n of [1, 4096, 65536, 65537, 4 << 20]) {
    const b = ioBuffer(n)
    t.equal(b.length, n)
    t.equal(b.byteOffset, 0)
    t.equal(b.buffer.byteLength % 65536, 0, 'whole pages underneath')
    t.ok(b.buffer.byteLength >= n)
  }
  t.ok(ioBuffer(8192).every((x) => x === 0))
})

t.test('shared gives memory a worker can see (SharedArrayBuffer); otherwise it is not shared', async (t) => {
  t.ok(ioBuffer(4096, { shared: true }).buffer instanceof SharedArrayBuffer)
  t.notOk(ioBuffer(4096).buffer instanceof SharedArrayBuffer)
})

/** Whether O_DIRECT on this file system refuses memory 16 bytes past a page start (else the test below proves nothing). */
const alignmentChecked = (): string | false => {
  const dir = mkdtempSync(join(process.cwd(), '.io-buffer-probe-'))
  try {
    const probe = directWrite(join(dir, 'control'), Buffer.from(ioBuffer(8192).buffer, 16, 4096))
    return probe === 'EINVAL' ? false : `this file system does not check O_DIRECT alignment (control write: ${String(probe)})`
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

t.test('the buffer is aligned well enough for O_DIRECT, which refuses the same memory 16 bytes in', { skip: alignmentChecked() }, async (t) => {
  const dir = t.testdir()
  for (const [i, b] of [ioBuffer(4096), ioBuffer(1 << 20), ioBuffer(1 << 20, { shared: true })].entries()) {
    b.fill(i + 1)
    t.equal(directWrite(join(dir, `f${i}`), b), b.length, `buffer ${i} (${b.length} bytes) written with O_DIRECT`)
  }
})
