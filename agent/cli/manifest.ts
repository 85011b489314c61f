/**
 * `boot-agent manifest IMAGE ...`: writes the chunked, optionally signed
 * manifest of an image file (SPEC §4, docs/manifest.md); and
 * `boot-agent manifest --check FILE`: validates one as a node would.
 */
import { readFile, rename, open, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { ConfigError } from '../core/errors.js'
import { logOp } from '../core/log.js'
import { buildManifest } from '../manifest/build.js'
import { DEFAULT_CHUNKING, chunkingForAverage } from '../manifest/cdc.js'
import { parseManifest } from '../manifest/schema.js'
import { serializeManifest } from '../manifest/serialize.js'
import { ARCH_RE, machineArch } from '../manifest/arch.js'
import { keyIdOf, signManifest, toPrivateKey, toPublicKey } from '../manifest/sign.js'
import type { Manifest } from '../manifest/types.js'
import { type Command, parseCommandArgs } from './command.js'

const USAGE = `usage: boot-agent manifest IMAGE [--name N] [--url U]... [--chunk-size AVG]
                           [--format F] [--sign KEYFILE] [--out FILE] [--json]
                           [--without-segments] [--without-fsverity]
                           [--arch ARCH | --without-arch]
       boot-agent manifest --check FILE [--pubkey PUBFILE] [--base-url URL] [--json]

Writes the manifest of an image file: its size and sha256 (its identity), the
content-defined chunk list (offset, size, sha256 of each chunk), the xxh64 of
each 64 MiB segment (what a node's fast check of a cache hit compares with) and
where nodes fetch it. The format is documented in docs/manifest.md.

  IMAGE              the image file (a squashfs, usually)
  --name N           image name (default: IMAGE's file name); letters, digits
                     and . _ + @ : - only
  --url U            where nodes fetch the image; repeat for mirrors, in
                     preference order. Absolute http(s) URLs, or URLs relative
                     to the manifest's own URL (default: IMAGE's file name,
                     i.e. the image sits next to the manifest)
  --chunk-size AVG   average chunk size, a power of two between 256 and 64M
                     (suffixes K, M: 64K, 1M); min = AVG/4, max = AVG*4.
                     Default 64K (min 16K, max 256K). Smaller chunks make
                     smaller delta updates and a bigger manifest.
  --format F         image format (default: squashfs if IMAGE starts with the
                     squashfs magic, else raw)
  --sign KEYFILE     sign with this ed25519 private key (boot-agent keygen)
  --out FILE         write the manifest to FILE (atomically) and print a summary
                     line; without it the manifest goes to standard output
  --json             with --out or --check: print the summary as JSON
  --arch ARCH        the architecture the image runs on, recorded as \`arch\`
                     (uname -m spelling: x86_64, aarch64, …); default this
                     machine's (${machineArch()}). Nodes of another one refuse it
  --without-arch     leave out arch: only for nodes whose agent is older than
                     the field (they refuse it)
  --without-segments leave out xxh64Segments: only for nodes whose agent is
                     older than the field (they refuse it); newer nodes then
                     check a cache hit by the sha256 of every chunk (slower)
  --without-fsverity leave out fsverityDigest (the image's fs-verity digest):
                     only for nodes whose agent is older than the field

  --check FILE       validate the manifest FILE as a node would; exit 0 if it
                     is valid, 1 (naming the field) if not
  --pubkey PUBFILE   with --check: require a valid signature by this key
  --base-url URL     with --check: the manifest's URL, to resolve relative URLs

Progress of large images is logged (JSON on standard error) every few seconds.`

/** Log progress at most this often. */
const PROGRESS_INTERVAL_MS = 2000

const SIZE_RE = /^(\d+)\s*(k|kib|m|mib)?$/i

/** "64K", "1M", "65536" → bytes. */
export const parseChunkSize = (s: string): number => {
  const m = SIZE_RE.exec(s.trim())
  if (!m) throw new ConfigError('--chunk-size', `not a size: ${JSON.stringify(s)} (use e.g. 64K or 1M)`)
  const unit = (m[2] ?? '').toLowerCase()
  const n = Number(m[1]) * (unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1)
  try {
    return chunkingForAverage(n).avgSize
  } catch (e) {
    throw new ConfigError('--chunk-size', `${s}: ${e instanceof Error ? e.message.replace(/^chunking\.avgSize: /, '') : String(e)}`)
  }
}

/** Writes `data` to `path` atomically: a new temp file next to it, fsync, rename. */
const writeAtomic = async (path: string, data: string): Promise<void> => {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`)
  const fh = await open(tmp, 'wx', 0o644)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (e) {
    await fh.close()
    await unlink(tmp).catch(() => undefined)
    throw e
  }
  await fh.close()
  try {
    await rename(tmp, path)
  } catch (e) {
    await unlink(tmp).catch(() => undefined)
    throw e
  }
}

const readKeyFile = async (path: string, option: string): Promise<string> => {
  try {
    return await readFile(path, 'utf8')
  } catch (e) {
    throw new ConfigError(option, `cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`)
  }
}

const summary = (m: Manifest, extra: Record<string, unknown>): Record<string, unknown> => ({
  name: m.name,
  sha256: m.sha256,
  size: m.size,
  chunks: m.chunks.length,
  xxh64Segments: m.xxh64Segments?.length ?? 0,
  ...(m.fsverityDigest ? { fsverityDigest: m.fsverityDigest } : {}),
  format: m.format,
  arch: m.arch ?? null,
  urls: m.urls,
  signed: m.signature ? m.signature.keyId : false,
  ...extra,
})

export const command: Command = {
  name: 'manifest',
  summary: 'write a chunked manifest for an image file',
  usage: USAGE,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('manifest', argv, {
      name: { type: 'string' },
      url: { type: 'string', multiple: true },
      'chunk-size': { type: 'string' },
      format: { type: 'string' },
      sign: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean', default: false },
      check: { type: 'string' },
      pubkey: { type: 'string' },
      'base-url': { type: 'string' },
      'without-segments': { type: 'boolean', default: false },
      arch: { type: 'string' },
      'without-arch': { type: 'boolean', default: false },
      'without-fsverity': { type: 'boolean', default: false },
    })

    if (values.check !== undefined) {
      if (positionals.length > 0) throw new ConfigError('boot-agent manifest', '--check takes the manifest file and no IMAGE')
      let text: string
      try {
        text = await readFile(values.check, 'utf8')
      } catch (e) {
        throw new ConfigError('--check', `cannot read ${values.check}: ${e instanceof Error ? e.message : String(e)}`)
      }
      const publicKey = values.pubkey !== undefined ? toPublicKey(await readKeyFile(values.pubkey, '--pubkey')) : undefined
      const m = parseManifest(text, {
        ...(publicKey ? { publicKey } : {}),
        ...(values['base-url'] !== undefined ? { baseUrl: values['base-url'] } : {}),
      })
      const s = summary(m, { file: values.check, verifiedBy: publicKey ? keyIdOf(publicKey) : false })
      ctx.out(
        values.json
          ? JSON.stringify(s)
          : `${values.check}: valid manifest of ${m.name} (${m.size} bytes, sha256 ${m.sha256}, ${m.chunks.length} chunks, ${m.xxh64Segments ? `${m.xxh64Segments.length} xxh64 segment(s)` : 'no xxh64Segments: nodes check a cache hit by every chunk\'s sha256'})${publicKey ? `, signature verified (key ${keyIdOf(publicKey)})` : m.signature ? ', signed (not verified: no --pubkey)' : ', unsigned'}`,
      )
      return 0
    }
    for (const o of ['pubkey', 'base-url'] as const) {
      if (values[o] !== undefined) throw new ConfigError(`--${o}`, 'only goes with --check')
    }

    if (positionals.length !== 1) {
      throw new ConfigError('boot-agent manifest', positionals.length === 0 ? 'IMAGE is required (see --help)' : `one IMAGE only, got ${positionals.length}`)
    }
    const image = positionals[0]!
    const chunking = values['chunk-size'] !== undefined ? chunkingForAverage(parseChunkSize(values['chunk-size'])) : { ...DEFAULT_CHUNKING }
    const privateKey = values.sign !== undefined ? toPrivateKey(await readKeyFile(values.sign, '--sign')) : undefined
    if (values.arch !== undefined && values['without-arch']) throw new ConfigError('--arch', 'and --without-arch exclude each other')
    if (values.arch !== undefined && !ARCH_RE.test(values.arch)) throw new ConfigError('--arch', `not an architecture as uname -m spells it (x86_64, aarch64, …): ${JSON.stringify(values.arch)}`)
    const arch = values['without-arch'] ? undefined : (values.arch ?? machineArch())
    const name = values.name ?? basename(image)
    const urls = values.url ?? [basename(image)]

    let lastLog = performance.now()
    let m = await logOp(ctx.log, 'build manifest', { image, name }, () =>
      buildManifest(image, {
        name,
        urls,
        chunking,
        ...(values.format !== undefined ? { format: values.format } : {}),
        ...(values['without-segments'] ? { xxh64Segments: false } : {}),
        ...(arch !== undefined ? { arch } : {}),
        ...(values['without-fsverity'] ? { fsverity: false } : {}),
        signal: ctx.signal,
        onProgress: (p) => {
          const t = performance.now()
          if (t - lastLog < PROGRESS_INTERVAL_MS) return
          lastLog = t
          ctx.log.info({ phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, percent: Math.round((100 * p.bytesDone) / p.bytesTotal) }, `manifest ${p.phase} ${Math.round((100 * p.bytesDone) / p.bytesTotal)} %`)
        },
      }).catch((e: unknown) => {
        if (e && typeof e === 'object' && 'code' in e && e.code === 'ENOENT') throw new ConfigError('IMAGE', `${image} does not exist`)
        throw e
      }),
    )
    if (privateKey) m = signManifest(m, privateKey)
    if (values.out === undefined) {
      ctx.out(serializeManifest(m))
      return 0
    }
    await writeAtomic(values.out, serializeManifest(m) + '\n')
    const s = summary(m, { file: values.out })
    ctx.out(
      values.json
        ? JSON.stringify(s)
        : `wrote ${values.out}: ${m.name} ${m.size} bytes, sha256 ${m.sha256}, ${m.chunks.length} chunks${m.signature ? `, signed by ${m.signature.keyId}` : ''}`,
    )
    return 0
  },
}
