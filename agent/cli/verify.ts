import { ConfigError } from '../core/errors.js'
import { Cache, type FastDigest } from '../cache/store.js'
import { hashRangesWithCaller, prewarmVerifyWorkers } from '../hash/file.js'
import { type Command, parseCommandArgs } from './command.js'

const usage = `usage: boot-agent verify --cache DIR [--strong] [--json]

Re-verifies every object in a cache: size + xxh64 of every 64 MiB segment
(fast, at disk speed, on every core), or sha256 of every chunk with
--strong. A corrupt object is named with the chunks that differ (recorded in
its metadata, so the next fetch repairs only those). Symlinks, foreign files
and malformed metadata (also an older format's, schema 1) are reported,
never followed.

options:
  --cache DIR   cache directory
  --strong      sha256 of every chunk instead of the segments' xxh64
  --json        print one JSON object

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
      json: { type: 'boolean' },
    })
    if (positionals.length) throw new ConfigError('boot-agent verify', `unexpected argument ${JSON.stringify(positionals[0])}`)
    if (!values.cache) throw new ConfigError('--cache', 'is required')
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
    const results: { sha256: string; path: string; ok: boolean; reason?: string; badChunks: number[] }[] = []
    for (const o of objects) {
      // o.meta: list() has just read and validated it (2.4 MB for a 2 GiB image); not parsed twice.
      const digest = digests.get(o.sha256)?.digest
      const v = await cache.verify(o.sha256, { mode: values.strong ? 'strong' : 'fast', signal: ctx.signal, meta: o.meta, ...(digest ? { digest } : {}) })
      await cache.recordVerdict(o.sha256, v) // a recorded xxh64 the bytes disprove is corrected
      if (!v.ok && v.badChunks.length) await cache.markCorrupt(o.sha256, v.badChunks)
      results.push({ sha256: o.sha256, path: o.path, ok: v.ok, ...(v.reason ? { reason: v.reason } : {}), badChunks: v.badChunks })
    }
    const corrupt = results.filter((r) => !r.ok)
    const allProblems = [...problems, ...cache.problems.filter((p) => !problems.some((q) => q.path === p.path && q.problem === p.problem))]
    if (values.json) {
      ctx.out(JSON.stringify({ mode: values.strong ? 'strong' : 'fast', objects: results, problems: allProblems }))
    } else {
      for (const r of results) {
        ctx.out(r.ok ? `ok       ${r.sha256}` : `CORRUPT  ${r.sha256}  ${r.reason ?? ''}${r.badChunks.length ? ` (chunks ${r.badChunks.slice(0, 10).join(',')}${r.badChunks.length > 10 ? ',…' : ''})` : ''}`)
      }
      for (const p of allProblems) ctx.out(`FOREIGN  ${p.path}: ${p.problem}`)
      ctx.out(`${results.length - corrupt.length} ok, ${corrupt.length} corrupt, ${allProblems.length} problem(s)`)
    }
    return corrupt.length || allProblems.length ? 1 : 0
  },
}
