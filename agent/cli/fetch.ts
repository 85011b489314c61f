import { readFile } from 'node:fs/promises'
import { BootAgentError, ConfigError, messageOf } from '../core/errors.js'
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../core/retry.js'
import { Cache } from '../cache/store.js'
import { ARCH_RE, machineArch } from '../manifest/arch.js'
import { fetchImage, fetchManifest } from '../transport/fetch-image.js'
import { type Command, EXIT_USAGE, parseCommandArgs } from './command.js'

/** Manifest attempts at the prompt: a head that is down is said in seconds, not after the boot path's ~20 s of backoff. */
const INTERACTIVE_MANIFEST_ATTEMPTS = 4
const INTERACTIVE_MAX_DELAY_MS = 2_000
const interactiveRetry: RetryPolicy = { ...DEFAULT_RETRY_POLICY, maxAttempts: INTERACTIVE_MANIFEST_ATTEMPTS, maxDelayMs: INTERACTIVE_MAX_DELAY_MS }

const usage = `usage: boot-agent fetch MANIFEST_URL --cache DIR [--pubkey FILE] [--strong] [--json]

Fetches the image a manifest describes into a content-addressed cache and
prints where the verified object is. A cached copy is re-verified first
(fast: size + xxh64; --strong: sha256 of every chunk); a damaged one is
repaired by fetching only its bad chunks; an interrupted fetch resumes from
its verified chunks; chunks already held by other cached images are copied
instead of downloaded.

options:
  --cache DIR        cache directory (created root-only when missing; an existing
                     directory must be a cache or empty, and not shared like /tmp)
  --pubkey FILE      ed25519 public key (PEM); refuse unsigned or wrongly signed manifests
  --strong           re-verify a cache hit with sha256 instead of xxh64
  --node ID          seed for this node's mirror order and retry jitter (default: host name)
  --streams N        parallel Range requests (default 1; more for links that cap
                     one connection below the disk's rate)
  --pin SHA256       keep this object when evicting to make room (repeatable)
  --arch ARCH        fetch an image built for ARCH (uname -m spelling: x86_64,
                     aarch64, …); default this machine's, and a manifest whose
                     arch differs is refused (EARCH) before any byte is fetched
  --json             print one JSON object instead of text; on failure too:
                     {"error": {"code", "message"}} (and the exit status below)

https: Node's root certificates are trusted, plus a site CA from the file
named by BOOT_AGENT_CA, or /etc/boot-agent/ca.pem when that exists.

A manifest that cannot be fetched is retried ${INTERACTIVE_MANIFEST_ATTEMPTS - 1} times within a few seconds,
each retry logged (info) with its reason; a server that is not there is named
with what to check ("is the head node running at HOST:PORT?"). Manifest URLs
of the reference head: http://HEAD:8080/v1/images/NAME/manifest (follows the
name) or .../v1/images/by-digest/SHA256/manifest.

Exit status: 0 only when a verified object is in the cache; 1 on any failure
(the error names the URL and digests); 2 on a usage error or a bad CA file.`

/** `{"error": {"code", "message"}}`: what `fetch --json` prints when it fails. */
export const jsonError = (e: unknown): { error: { code: string; message: string } } => ({
  error: { code: e instanceof BootAgentError ? e.code : 'EUNEXPECTED', message: messageOf(e) },
})

export const command: Command = {
  name: 'fetch',
  summary: 'fetch an image by manifest URL into a cache, verified',
  usage,
  run: async (argv, ctx) => {
    if (!argv.includes('--json')) return run(argv, ctx)
    try {
      return await run(argv, ctx)
    } catch (e) {
      // The one JSON object on stdout, for scripts; the plain line on stderr, for people.
      const j = jsonError(e)
      ctx.out(JSON.stringify(j))
      process.stderr.write(`boot-agent fetch: ${j.error.message}\n`)
      return j.error.code === 'ECONFIG' ? EXIT_USAGE : 1
    }
  },
}

const run: Command['run'] = async (argv, ctx) => {
  const { values, positionals } = parseCommandArgs('fetch', argv, {
    cache: { type: 'string' },
    pubkey: { type: 'string' },
    strong: { type: 'boolean' },
    node: { type: 'string' },
    streams: { type: 'string' },
    pin: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    arch: { type: 'string' },
  })
  if (positionals.length !== 1) {
    if (values.json) throw new ConfigError('MANIFEST_URL', `expected one, got ${positionals.length}`)
    process.stderr.write(`boot-agent fetch: expected one MANIFEST_URL\n\n${usage}\n`)
    return EXIT_USAGE
  }
  const url = positionals[0]!
  if (!/^https?:\/\//.test(url)) throw new ConfigError('MANIFEST_URL', `not an http(s) URL: ${JSON.stringify(url)}`)
  if (!values.cache) throw new ConfigError('--cache', 'is required')
  let streams: number | undefined
  if (values.streams !== undefined) {
    streams = Number(values.streams)
    if (!Number.isInteger(streams) || streams < 1 || streams > 64) throw new ConfigError('--streams', `not an integer in 1..64: ${values.streams}`)
  }
  if (values.arch !== undefined && !ARCH_RE.test(values.arch)) throw new ConfigError('--arch', `not an architecture as uname -m spells it (x86_64, aarch64, …): ${JSON.stringify(values.arch)}`)
  for (const p of values.pin ?? []) if (!/^[0-9a-f]{64}$/.test(p)) throw new ConfigError('--pin', `not a sha256: ${p}`)
  const publicKey = values.pubkey ? await readFile(values.pubkey, 'utf8').catch((e: Error) => {
    throw new ConfigError('--pubkey', `cannot read ${values.pubkey}: ${e.message}`)
  }) : undefined
  // A bad --cache is named before any network work, but the cache is created only once
  // there is a manifest to fetch into: a fetch that failed (head down, bad URL) left an
  // empty root-only cache directory behind.
  const refusal = await Cache.refusal(values.cache)
  if (refusal) throw refusal
  const manifest = await fetchManifest(url, { log: ctx.log, signal: ctx.signal, retry: interactiveRetry, arch: values.arch ?? machineArch(), ...(publicKey ? { publicKey } : {}) })
  const cache = await Cache.open(values.cache, { log: ctx.log })
  const r = await fetchImage({
    manifest,
    cache,
    log: ctx.log,
    signal: ctx.signal,
    verify: values.strong ? 'strong' : 'fast',
    ...(values.node ? { nodeId: values.node } : {}),
    ...(streams ? { streams } : {}),
    ...(values.pin ? { pin: values.pin } : {}),
  })
  if (values.json) {
    ctx.out(JSON.stringify({ name: manifest.name, ...r, problems: cache.problems }))
  } else {
    ctx.out(r.path)
    ctx.out(
      `${r.hit ? 'hit' : 'miss'}: ${manifest.name} sha256 ${r.sha256}, ${r.size} bytes; downloaded ${r.bytesDownloaded}, reused ${r.bytesReused}, resumed ${r.bytesResumed}, repaired chunks ${r.chunksRepaired}, ${r.durationMs} ms`,
    )
    for (const p of cache.problems) ctx.out(`warning: ignored ${p.path}: ${p.problem}`)
  }
  return 0
}
