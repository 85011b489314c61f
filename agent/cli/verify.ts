import { readFile } from 'node:fs/promises'
import { ConfigError } from '../core/errors.js'
import { Cache, type FastDigest, type PublishedDigests } from '../cache/store.js'
import { hashRangesWithCaller, prewarmVerifyWorkers } from '../hash/file.js'
import { type Command, parseCommandArgs } from './command.js'

const usage = `usage: boot-agent verify --cache DIR [--strong] [--manifest URL|FILE]... [--pubkey FILE] [--json]

Re-verifies every object in a cache: size + xxh64 of every 64 MiB segment
(fast, at disk speed, on every core), or sha256 of every chunk with
--strong. A corrupt object is named with the chunks that differ (recorded in
its metadata, so the next fetch repairs only those). Symlinks, foreign files
and malformed metadata (also an older format's, schema 1) are reported,
never followed.

What the bytes are compared with: an object whose manifest is given with
--manifest is checked against the digests in that manifest (what the head
published and signed); every other object against its own metadata in the
cache, which finds corruption but not tampering (whoever can rewrite an
object can rewrite its metadata). Each line says which.

options:
  --cache DIR           cache directory
  --strong              sha256 of every chunk instead of the segments' xxh64
  --manifest URL|FILE   check the object this manifest describes against it
                        (repeatable); an http(s) URL is fetched
  --pubkey FILE         with --manifest: refuse one not signed by this key
  --json                print one JSON object

Exit status: 0 when every object verified and nothing foreign was found;
1 when any object is corrupt, the cache holds foreign entries, or DIR is
missing or is not a cache (a mistyped path is not an empty cache; nothing
in it is created or changed); 2 on a usage error.`

export const command: Command = {
  name: 'verify',
  summary: 're-verify every object in a cache',
  usage,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('verify', argv, {
      cache: { type: 'string' },
      strong: { type: 'boolean' },
      manifest: { type: 'string', multiple: true },
      pubkey: { type: 'string' },
      json: { type: 'boolean' },
    })
    if (positionals.length) throw new ConfigError('boot-agent verify', `unexpected argument ${JSON.stringify(positionals[0])}`)
    if (!values.cache) throw new ConfigError('--cache', 'is required')
    if (values.pubkey !== undefined && !values.manifest) throw new ConfigError('--pubkey', 'only goes with --manifest')
    const published = await readManifests(values.manifest ?? [], values.pubkey, ctx)
    // The hashing workers start while the cache is opened and its metadata read, on all
    // cores but this thread's: in both modes this thread hashes too (it has nothing else
    // to do, and one worker fewer is ~50 ms of a core not spent starting it).
    const warm = prewarmVerifyWorkers(values.strong ? 'strong' : 'fast', { callerHashes: true })
    const cache = await Cache.open(values.cache, { log: ctx.log, mustExist: true, hasher: hashRangesWithCaller })
    await warm
    // Fast mode: hashing starts before list() reads and validates the metadata
    // (~15–20 ms of this thread for a 2 GiB image's 2 MB), one object after
    // another, so that the workers hash meanwhile. An object list() does not
    // return (bad metadata) has its digest stopped.
    const digests = new Map<string, { digest: Promise<FastDigest>; stop: AbortController }>()
    if (!values.strong) {
      let previous: Promise<unknown> = Promise.resolve()
      for (const f of await cache.objectFiles()) {
        const stop = new AbortController()
        const signal = AbortSignal.any([stop.signal, ctx.signal])
        const digest = previous.then(() => cache.fastDigest(f.sha256, { signal }))
        digest.catch(() => undefined) // awaited (or stopped) below
        previous = digest.catch(() => undefined)
        digests.set(f.sha256, { digest, stop })
      }
    }
    const { objects, problems } = await cache.list()
    for (const [sha, d] of digests) if (!objects.some((o) => o.sha256 === sha)) d.stop.abort()
    const results: { sha256: string; path: string; ok: boolean; against: 'manifest' | 'metadata'; verifiedBy?: string; reason?: string; badChunks: number[] }[] = []
    for (const o of objects) {
      // o.meta: list() has just read and validated it (2.4 MB for a 2 GiB image); not parsed twice.
      const digest = digests.get(o.sha256)?.digest
      const pub = published.get(o.sha256)
      const v = await cache.verify(o.sha256, { mode: values.strong ? 'strong' : 'fast', signal: ctx.signal, meta: o.meta, ...(pub ? { published: pub } : {}), ...(digest ? { digest } : {}) })
      await cache.recordVerdict(o.sha256, v) // a recorded xxh64 the bytes disprove is corrected
      if (!v.ok && v.badChunks.length) await cache.markCorrupt(o.sha256, v.badChunks)
      results.push({ sha256: o.sha256, path: o.path, ok: v.ok, against: pub ? 'manifest' : 'metadata', ...(v.verifiedBy ? { verifiedBy: v.verifiedBy } : {}), ...(v.reason ? { reason: v.reason } : {}), badChunks: v.badChunks })
    }
    const unmatched = [...published.keys()].filter((sha) => !objects.some((o) => o.sha256 === sha))
    const corrupt = results.filter((r) => !r.ok)
    const allProblems = [...problems, ...cache.problems.filter((p) => !problems.some((q) => q.path === p.path && q.problem === p.problem))]
    if (values.json) {
      ctx.out(JSON.stringify({ mode: values.strong ? 'strong' : 'fast', objects: results, problems: allProblems, ...(unmatched.length ? { notInCache: unmatched } : {}) }))
    } else {
      for (const r of results) {
        const against = r.against === 'manifest' ? '  (against the manifest)' : '  (against local metadata only: corruption, not tampering)'
        ctx.out(r.ok ? `ok       ${r.sha256}${against}` : `CORRUPT  ${r.sha256}  ${r.reason ?? ''}${r.badChunks.length ? ` (chunks ${r.badChunks.slice(0, 10).join(',')}${r.badChunks.length > 10 ? ',…' : ''})` : ''}${against}`)
      }
      for (const p of allProblems) ctx.out(`FOREIGN  ${p.path}: ${p.problem}`)
      for (const sha of unmatched) ctx.out(`absent   ${sha}  (given by --manifest, not in the cache)`)
      ctx.out(`${results.length - corrupt.length} ok, ${corrupt.length} corrupt, ${allProblems.length} problem(s)`)
    }
    return corrupt.length || allProblems.length ? 1 : 0
  },
}

/**
 * The digests each `--manifest` published, by image sha256: a file read and
 * parsed as a node would, or an http(s) URL fetched (the downloader is
 * loaded only then: `verify` without a manifest does not pay for it).
 */
const readManifests = async (
  sources: string[],
  pubkeyFile: string | undefined,
  ctx: Parameters<Command['run']>[1],
): Promise<Map<string, PublishedDigests>> => {
  const out = new Map<string, PublishedDigests>()
  if (!sources.length) return out
  const publicKey = pubkeyFile
    ? await readFile(pubkeyFile, 'utf8').catch((e: Error) => {
        throw new ConfigError('--pubkey', `cannot read ${pubkeyFile}: ${e.message}`)
      })
    : undefined
  for (const src of sources) {
    const key = publicKey ? { publicKey } : {}
    const m = /^https?:\/\//i.test(src)
      ? await (await import('../transport/fetch-image.js')).fetchManifest(src, { log: ctx.log, signal: ctx.signal, ...key })
      : (await import('../manifest/schema.js')).parseManifest(
          await readFile(src, 'utf8').catch((e: Error) => {
            throw new ConfigError('--manifest', `cannot read ${src}: ${e.message}`)
          }),
          key,
        )
    out.set(m.sha256, { size: m.size, chunks: m.chunks, ...(m.xxh64Segments ? { xxh64Segments: m.xxh64Segments } : {}) })
  }
  return out
}
