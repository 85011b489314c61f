/**
 * `boot-agent publish IMAGE --name NAME --store DIR`: stores an image in a
 * head-node store under its digest, writes its manifest (signed with --sign),
 * and moves the name to it, keeping the name's history.
 */
import { readFile } from 'node:fs/promises'
import { ConfigError, messageOf } from '../core/errors.js'
import { type PublishProgress, publishImage } from '../head/publish.js'
import { ARCHITECTURES, hostArch, normaliseArch } from '../head/names.js'
import { buildManifest, imageFileSize, serializeManifest, signManifest, toPrivateKey } from '../manifest/index.js'
import { type Command, parseCommandArgs } from './command.js'

const USAGE = `usage: boot-agent publish IMAGE --name NAME --store DIR [--sign KEY] [--url MIRROR]... [--arch ARCH] [--json]

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
  --arch ARCH     architecture the image runs on (${ARCHITECTURES.join(', ')}); default this machine's;
                  recorded in the manifest as arch (nodes of another one refuse it)
  --without-arch  leave arch out of the manifest (nodes whose agent predates the
                  field refuse it); the store and the head still know it
  --format FMT    image format recorded in the manifest (default: detected, squashfs or raw)
  --json          print the result as one JSON line (what publish prints anyway;
                  accepted like every command's --json)

Publishing bytes the store already holds (under this name or another) keeps
the manifest stored for them: its name (the first publisher's) and its
signature. With --sign it is re-signed; with other --url mirrors and no
--sign, a signed manifest is refused (that would strip its signature). A name
already pointing at the digest gets no new history entry.

Images of 64 MiB and more: progress lines on standard error (every 2 s).

prints one JSON line: {name, sha256, size, previous, stored, moved, signed, manifest, manifestKept}
`

/** Progress lines only for images at least this large (smaller ones take a moment). */
const PROGRESS_MIN_BYTES = 64 * 1024 * 1024
/** At most one progress line per phase this often. */
const PROGRESS_INTERVAL_MS = 2000

/** A reporter of publish progress as plain lines (first and last of each phase, and every interval between). */
export const progressLines = (write: (line: string) => void, now: () => number = () => performance.now()): ((p: PublishProgress) => void) => {
  let phase: string | undefined
  let last = 0
  return (p) => {
    if (p.bytesTotal < PROGRESS_MIN_BYTES) return
    const t = now()
    const done = p.bytesDone >= p.bytesTotal
    if (p.phase === phase && !done && t - last < PROGRESS_INTERVAL_MS) return
    if (p.phase === phase && done && last === Infinity) return
    phase = p.phase
    last = done ? Infinity : t
    const MiB = 1024 * 1024
    const what = p.phase === 'copy' ? 'copying into the store' : 'writing the manifest (chunking, hashing)'
    write(`publish: ${what}: ${Math.floor((100 * p.bytesDone) / p.bytesTotal)} % (${Math.round(p.bytesDone / MiB)} of ${Math.round(p.bytesTotal / MiB)} MiB)`)
  }
}


/** Whether the manifest file at `path` carries a signature. */
const isSigned = async (path: string): Promise<boolean> => (JSON.parse(await readFile(path, 'utf8')) as { signature?: unknown }).signature !== undefined

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
      json: { type: 'boolean' },
      'without-arch': { type: 'boolean' },
    })
    const [image, ...extra] = positionals
    if (!image) throw new ConfigError('IMAGE', 'is required (the image file to publish)')
    if (extra.length) throw new ConfigError('boot-agent publish', `unexpected argument ${JSON.stringify(extra[0])}`)
    if (!values.name) throw new ConfigError('--name', 'is required')
    if (!values.store) throw new ConfigError('--store', 'is required')
    await imageFileSize(image, 'IMAGE')
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
      signs: key !== undefined,
      ...(values['without-arch'] ? { withoutManifestArch: true } : {}),
      onProgress: progressLines((l) => process.stderr.write(`${l}\n`)),
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
        moved: result.moved,
        signed: Boolean(key) || (result.manifest === 'kept' && (await isSigned(result.manifestPath))),
        manifest: result.manifestPath,
        manifestKept: result.manifest === 'kept',
      }),
    )
    return 0
  },
}
