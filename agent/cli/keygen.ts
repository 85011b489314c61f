/**
 * `boot-agent keygen --out PREFIX`: an ed25519 key pair for signing manifests
 * (SPEC §4). Writes PREFIX.key (private, PKCS#8 PEM, mode 0600) and
 * PREFIX.pub (public, SPKI PEM); never overwrites either.
 */
import { open, unlink } from 'node:fs/promises'
import { ConfigError, isErrno } from '../core/errors.js'
import { generateKeyPair, keyIdOf } from '../manifest/sign.js'
import { type Command, parseCommandArgs } from './command.js'

const USAGE = `usage: boot-agent keygen --out PREFIX [--json]

Makes an ed25519 key pair for signing manifests (boot-agent manifest --sign).

  --out PREFIX   write PREFIX.key (private key, PKCS#8 PEM, mode 0600) and
                 PREFIX.pub (public key, SPKI PEM). Existing files are never
                 overwritten: the command fails instead.
  --json         print {privateKey, publicKey, keyId} as JSON instead of a line

The key id printed is the sha256 of the public key (DER); signed manifests carry
it so a node can say which key signed what it refused. Give PREFIX.pub to the
nodes (boot-agent fetch --pubkey, rd.bootagent.pubkey); keep PREFIX.key secret.`

/** Creates `path` with `data`, failing (EEXIST) if it exists; fsyncs it. */
const writeNew = async (path: string, data: string, mode: number): Promise<void> => {
  const fh = await open(path, 'wx', mode)
  try {
    await fh.writeFile(data)
    await fh.chmod(mode) // the umask may have taken bits away; never added any
    await fh.sync()
  } finally {
    await fh.close()
  }
}

export const command: Command = {
  name: 'keygen',
  summary: 'make an ed25519 key pair for signing manifests',
  usage: USAGE,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('keygen', argv, {
      out: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    if (positionals.length > 0) throw new ConfigError('boot-agent keygen', `unexpected argument ${JSON.stringify(positionals[0])} (see --help)`)
    const prefix = values.out
    if (!prefix) throw new ConfigError('--out', 'is required: the path prefix of the key files (see boot-agent keygen --help)')
    const keyPath = `${prefix}.key`
    const pubPath = `${prefix}.pub`
    const kp = generateKeyPair()
    try {
      await writeNew(keyPath, kp.privateKeyPem, 0o600)
    } catch (e) {
      if (isErrno(e, 'EEXIST')) throw new ConfigError('--out', `${keyPath} already exists; refusing to overwrite a key`)
      throw e
    }
    try {
      await writeNew(pubPath, kp.publicKeyPem, 0o644)
    } catch (e) {
      await unlink(keyPath).catch(() => undefined)
      if (isErrno(e, 'EEXIST')) throw new ConfigError('--out', `${pubPath} already exists; refusing to overwrite a key`)
      throw e
    }
    const keyId = keyIdOf(kp.publicKeyPem)
    ctx.log.info({ privateKey: keyPath, publicKey: pubPath, keyId }, 'wrote an ed25519 key pair')
    ctx.out(values.json ? JSON.stringify({ privateKey: keyPath, publicKey: pubPath, keyId }) : `wrote ${keyPath} (private, 0600) and ${pubPath}; key id ${keyId}`)
    return 0
  },
}
