/**
 * The boot stage's token for the head (docs/security.md): read from the
 * root-only token file the dracut module carried into the initramfs, and
 * handed to the daemon as `${runDir}/token` (mode 0600; /run survives
 * switch_root), so the booted system needs no copy of its own.
 */
import { join } from 'node:path'
import { writeFileDurable } from '../core/durable.js'
import { readTokenFile } from '../core/head-token.js'

/** The hand-off copy's name in the run directory, which the daemon reads by default. */
export const RUN_TOKEN_FILE = 'token'

/** Reads `path` (undefined when absent; ConfigError when not root-only) and leaves the run-dir copy for the daemon. */
export const readNodeToken = async (path: string, runDir: string): Promise<string | undefined> => {
  const token = await readTokenFile(path, { key: 'token file', optional: true })
  if (token !== undefined && join(runDir, RUN_TOKEN_FILE) !== path) await writeFileDurable(join(runDir, RUN_TOKEN_FILE), `${token}\n`, { mode: 0o600 })
  return token
}
