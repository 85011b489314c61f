/**
 * This node's bearer token for the head node (docs/security.md): read from
 * a root-only file (default /etc/boot-agent/token, which the dracut module
 * carries into the initramfs), never from the kernel command line, and sent
 * only to the head node's own origin, never to a mirror.
 *
 * Nothing here puts the token into an error, a log line or a record: a
 * refusal names the file and the fix, not its content.
 */
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import { ConfigError, isErrno, messageOf } from './errors.js'

/** A token file larger than this is not a token file. */
export const MAX_TOKEN_FILE_BYTES = 4096

/** The token and the one origin it may be sent to (`http://head:8080`). */
export interface HeadBearer {
  /** `new URL(server).origin` of the head node. */
  origin: string
  token: string
}

/** The bearer for the head at `server`, or undefined when there is no token. */
export const headBearer = (server: string, token: string | undefined): HeadBearer | undefined =>
  token ? { origin: new URL(server).origin, token } : undefined

/** `Authorization` headers for a request to `url`: the bearer only when `url` is the head's own origin. */
export const authHeaders = (url: string, bearer: HeadBearer | undefined): Record<string, string> => {
  if (!bearer) return {}
  let origin: string
  try {
    origin = new URL(url).origin
  } catch {
    return {}
  }
  return origin === bearer.origin ? { authorization: `Bearer ${bearer.token}` } : {}
}

/**
 * Reads the token: the file's first line, trimmed. Refused (ConfigError
 * naming `key` and the path) when the file is readable or writable by its
 * group or others, is owned by another user than this process's, is not a
 * regular file, or holds no token. `optional`: a missing file is `undefined`.
 */
export const readTokenFile = async (path: string, opts: { key: string; optional?: boolean }): Promise<string | undefined> => {
  let fh
  try {
    // O_NOFOLLOW: the check is of the file itself, not of whatever a link points at.
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW)
  } catch (e) {
    if (opts.optional && isErrno(e, 'ENOENT')) return undefined
    if (isErrno(e, 'ELOOP')) throw new ConfigError(opts.key, `${path} is a symbolic link; put the token in a regular file (mode 0600, owned by root)`)
    throw new ConfigError(opts.key, `cannot read the token file ${path}: ${messageOf(e)}`)
  }
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new ConfigError(opts.key, `${path} is not a regular file`)
    const uid = process.getuid?.()
    if (uid !== undefined && st.uid !== uid) {
      throw new ConfigError(opts.key, `${path} is owned by uid ${st.uid}, not by this process's user (uid ${uid}); fix: chown ${uid === 0 ? 'root' : uid} ${path}`)
    }
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
      throw new ConfigError(opts.key, `${path} is mode ${mode}: readable or writable by its group or others, so it is not a secret; fix: chmod 600 ${path}`)
    }
    if (st.size > MAX_TOKEN_FILE_BYTES) throw new ConfigError(opts.key, `${path} is ${st.size} bytes, more than a token file (${MAX_TOKEN_FILE_BYTES})`)
    const token = (await fh.readFile('utf8')).split('\n')[0]?.trim() ?? ''
    if (!token) throw new ConfigError(opts.key, `${path} holds no token (its first line is empty)`)
    // It goes into an HTTP header: visible ASCII only. The message does not echo it.
    if (!/^[\x21-\x7e]+$/.test(token)) throw new ConfigError(opts.key, `${path}: the token must be visible ASCII without spaces (e.g. openssl rand -hex 32)`)
    return token
  } finally {
    await fh.close()
  }
}
