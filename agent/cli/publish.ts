/**
 * `boot-agent publish IMAGE --name NAME --store DIR`: stores an image in a
 * head-node store under its digest, writes its manifest (signed with --sign),
 * and moves the name to it, keeping the name's history.
 */
import { readFile } from 'node:fs/promises'
import { ConfigError, messageOf } from '../core/errors.js'
import { publishImage } from '../head/publish.js'
import { ARCHITECTURES, hostArch, normaliseArch } from '../head/names.js'
import { buildManifest, serializeManifest, signManifest, toPrivateKey } from '../manifest/index.js'
import { type Command, parseCommandArgs } from './command.js'

const USAGE = `usage: boot-agent publish IMAGE --name NAME --store DIR [--sign KEY] [--url MIRROR]... [--arch ARCH]

Stores IMAGE in the head-node store under its sha256 (bytes under a digest are
never replaced in place), writes its chunked manifest, and moves NAME to the
new digest atomically. Every digest NAME ever pointed at stays in its history
(GET /v1/images/NAME on the head node).

options:
  --name NAME     image name: letters, digits, . _ : + - (no /, no .., no @)
  --store DIR     the store served by \`boot-agent head --store DIR\`
  --sign KEY      sign the manifest with this ed25519 private key (PEM, from boot-agent keygen)
  --url MIRROR    a mirror URL serving the same bytes (repeatable); the manifest then lists
                  the mirrors instead of the head node's own image endpoint
  --arch ARCH     architecture the image runs on (${ARCHITECTURES.join(', ')}); default this machine's
  --format FMT    image format recorded in the manifest (default: detected, squashfs or raw)

prints one JSON line: {name, sha256, size, previous, stored, manifest}
`

export const command: Command = {
  name: 'publish',
  summary: 'publish an image into a head-node store under a name',
  usage: USAGE,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('publish', argv, {
      name: { type: 'string' },
      store: { type: 'string' },
      sign: { type: 'string' },
      url: { type: 'string', multiple: true },
      arch: { type: 'string' },
      format: { type: 'string' },
    })
    const [image, ...extra] = positionals
    if (!image) throw new ConfigError('IMAGE', 'is required (the image file to publish)')
    if (extra.length) throw new ConfigError('boot-agent publish', `unexpected argument ${JSON.stringify(extra[0])}`)
    if (!values.name) throw new ConfigError('--name', 'is required')
    if (!values.store) throw new ConfigError('--store', 'is required')
    const arch = values.arch === undefined ? hostArch() : normaliseArch(values.arch)
    if (!arch) throw new ConfigError('--arch', `unknown architecture ${JSON.stringify(values.arch)} (expected one of ${ARCHITECTURES.join(', ')})`)
    let key: ReturnType<typeof toPrivateKey> | undefined
    if (values.sign) {
      let pem: string
      try {
        pem = await readFile(values.sign, 'utf8')
      } catch (e) {
        throw new ConfigError('--sign', `cannot read ${values.sign}: ${messageOf(e)}`)
      }
      key = toPrivateKey(pem)
    }
    const format = values.format
    const result = await publishImage({
      image,
      name: values.name,
      store: values.store,
      arch,
      ...(values.url ? { mirrors: values.url } : {}),
      ...(format ? { format } : {}),
      buildManifest: (path, o) => buildManifest(path, { ...o, ...(format ? { format } : {}) }),
      writeManifest: (m) => serializeManifest(key ? signManifest(m, key) : m),
      log: ctx.log,
      signal: ctx.signal,
    })
    ctx.out(
      JSON.stringify({
        name: result.name,
        sha256: result.sha256,
        size: result.size,
        previous: result.previous ?? null,
        stored: result.stored,
        signed: Boolean(key),
        manifest: result.manifestPath,
      }),
    )
    return 0
  },
}
