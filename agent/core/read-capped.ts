/**
 * A small text file read with a ceiling that holds whatever `stat` says:
 * /proc files report size 0, character devices too (`--cmdline-file
 * /dev/zero` read 512 MB into memory before failing with "Invalid string
 * length"), and a file may grow while it is read. At most `maxBytes + 1`
 * bytes are ever read; more than `maxBytes` is reported, not truncated
 * silently.
 */
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'

/** What a capped read found. */
export type CappedRead =
  | { kind: 'text'; text: string }
  /** Not a regular file (a FIFO would block, a device never ends): `type` names it. */
  | { kind: 'not-regular'; type: string }
  /** More than the ceiling: nothing of it is returned. */
  | { kind: 'too-large'; maxBytes: number }

const typeOf = (st: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string =>
  st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : 'not a regular file'

/**
 * Reads the regular file at `path` as UTF-8 when it holds at most `maxBytes`.
 * Opened O_NONBLOCK so a FIFO is refused instead of waiting for a writer.
 * Errors of open/read (ENOENT, EACCES…) are thrown as they are.
 */
export const readCappedText = async (path: string, maxBytes: number): Promise<CappedRead> => {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const st = await fh.stat()
    if (!st.isFile()) return { kind: 'not-regular', type: typeOf(st) }
    const buf = Buffer.allocUnsafe(maxBytes + 1)
    let got = 0
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, null)
      if (bytesRead === 0) break
      got += bytesRead
    }
    if (got > maxBytes) return { kind: 'too-large', maxBytes }
    return { kind: 'text', text: buf.toString('utf8', 0, got) }
  } finally {
    await fh.close()
  }
}
