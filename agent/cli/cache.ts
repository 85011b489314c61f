import { ConfigError } from '../core/errors.js'
import { Cache } from '../cache/store.js'
import { mountedObjects, pinReason } from '../cache/pin.js'
import { type Command, parseCommandArgs } from './command.js'

const usage = `usage: boot-agent cache ls --cache DIR [--json]
       boot-agent cache gc --cache DIR [--keep N] [--pin SHA256]... [--json]

ls  lists the cached objects, most recently used first (sha256, size, last
    use, last verification, names), and any foreign entries found.
gc  removes least recently used objects until at most N remain (default 2:
    the image booted and the previous one). Pinned objects, objects
    another process is writing, and an object mounted under a running root
    (an overlay boot's lower layer: printed as kept, with the loop device)
    are never removed.

options:
  --cache DIR     cache directory (must be a cache: exit 1 otherwise; never changed)
  --keep N        objects to keep (gc; default 2)
  --pin SHA256    never remove this object (gc; repeatable)
  --json          print one JSON object`

const DEFAULT_KEEP = 2

export const command: Command = {
  name: 'cache',
  summary: 'list or garbage-collect a cache (ls, gc)',
  usage,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('cache', argv, {
      cache: { type: 'string' },
      keep: { type: 'string' },
      pin: { type: 'string', multiple: true },
      json: { type: 'boolean' },
    })
    const sub = positionals[0]
    if (positionals.length !== 1 || (sub !== 'ls' && sub !== 'gc')) throw new ConfigError('boot-agent cache', `expected ls or gc, got ${JSON.stringify(positionals.join(' '))}`)
    if (!values.cache) throw new ConfigError('--cache', 'is required')
    // Every argument checked before the cache is touched.
    const keep = values.keep === undefined ? DEFAULT_KEEP : Number(values.keep)
    if (!Number.isInteger(keep) || keep < 0) throw new ConfigError('--keep', `not a non-negative integer: ${values.keep}`)
    for (const p of values.pin ?? []) if (!/^[0-9a-f]{64}$/.test(p)) throw new ConfigError('--pin', `not a sha256: ${p}`)
    const cache = await Cache.open(values.cache, { log: ctx.log, mustExist: true })
    if (sub === 'ls') {
      const { objects, problems } = await cache.list()
      objects.sort((a, b) => Date.parse(b.meta.lastUsedAt) - Date.parse(a.meta.lastUsedAt))
      if (values.json) {
        ctx.out(JSON.stringify({
          objects: objects.map((o) => ({ sha256: o.sha256, path: o.path, size: o.meta.size, lastUsedAt: o.meta.lastUsedAt, verifiedAt: o.meta.verifiedAt, names: o.meta.names, urls: o.meta.urls, corruptChunks: o.meta.corruptChunks ?? [] })),
          problems,
        }))
      } else {
        for (const o of objects) {
          const bad = o.meta.corruptChunks?.length ? `  CORRUPT chunks ${o.meta.corruptChunks.join(',')}` : ''
          ctx.out(`${o.sha256}  ${String(o.meta.size).padStart(12)}  used ${o.meta.lastUsedAt}  verified ${o.meta.verifiedAt}  ${o.meta.names.join(',')}${bad}`)
        }
        for (const p of problems) ctx.out(`FOREIGN  ${p.path}: ${p.problem}`)
      }
      return 0
    }
    // Objects under a running root (an overlay boot's lower layer) are kept whatever --keep says; said here, with why.
    const mounted = await mountedObjects((await cache.list()).objects)
    const removed = await cache.evict({ keep, pinned: values.pin ?? [] })
    const freed = removed.reduce((n, o) => n + o.meta.size, 0)
    if (values.json) ctx.out(JSON.stringify({ removed: removed.map((o) => ({ sha256: o.sha256, size: o.meta.size })), freedBytes: freed, mounted: [...mounted].map(([sha256, loops]) => ({ sha256, loops: loops.map((l) => `/dev/${l.device}`), reason: pinReason(loops) })) }))
    else {
      for (const [sha, loops] of mounted) ctx.out(`kept ${sha}: ${pinReason(loops)}`)
      for (const o of removed) ctx.out(`removed ${o.sha256}  ${o.meta.size}`)
      ctx.out(`${removed.length} object(s) removed, ${freed} bytes freed`)
    }
    return 0
  },
}
