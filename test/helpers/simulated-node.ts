/**
 * A simulated node for head-node tests: the real agent pieces a node uses
 * against a head node (descriptor → fetchManifest → fetchImage into its own
 * real cache directory), then its report posted as events over HTTP, as the
 * daemon would after draining its spool. No kernel, no partitions: those
 * belong to the boot-stage tests; this exercises the head node's side.
 */
import { join } from 'node:path'
import { Cache } from '../../agent/cache/store.js'
import { IntegrityError, messageOf } from '../../agent/core/errors.js'
import { type AgentEvent, makeEvent } from '../../agent/protocol/event.js'
import { fetchImage, fetchManifest } from '../../agent/transport/fetch-image.js'
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../../agent/core/retry.js'

export interface SimBoot {
  node: string
  ok: boolean
  sha256?: string
  error?: unknown
  events: AgentEvent[]
}

// Short backoff: the test is about what the head sees, not about waiting.
const QUICK_RETRY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 50 }

/** Boots `node` against `server` with a cache under `cacheRoot/node`; reports to the head. */
export const simulateBoot = async (server: string, node: string, cacheRoot: string, arch = 'x86_64'): Promise<SimBoot> => {
  const res = await fetch(`${server}/v1/nodes/${node}/boot?arch=${arch}`)
  if (!res.ok) throw new Error(`descriptor for ${node}: HTTP ${res.status} ${await res.text()}`)
  const d = (await res.json()) as { style: string; image: { name: string; sha256: string; manifest: string } }
  const image = { name: d.image.name, sha256: d.image.sha256 }
  const events: AgentEvent[] = []
  let out: SimBoot
  try {
    const manifest = await fetchManifest(new URL(d.image.manifest, server).href)
    const cache = await Cache.open(join(cacheRoot, node))
    const r = await fetchImage({ manifest, cache, nodeId: node, retry: QUICK_RETRY })
    // The boot stage's form: the boot record nested under `record` (agent/boot/handoff.ts).
    events.push(makeEvent('boot', node, { record: { schema: 1, node, result: 'ok', style: d.style, requestedStyle: d.style, fallbacks: [], image: { ...image, size: r.size }, cache: { hit: r.hit }, bytesFetched: r.bytesDownloaded } }, { image }))
    out = { node, ok: true, sha256: r.sha256, events }
  } catch (e) {
    if (e instanceof IntegrityError) {
      const chunk = e.context.chunk
      events.push(
        makeEvent(
          'integrity',
          node,
          {
            algorithm: e.algorithm,
            expected: e.expected,
            found: e.found,
            ...(e.url ? { url: e.url } : {}),
            ...(typeof chunk === 'number' ? { chunk } : {}),
            what: e.message,
          },
          { image },
        ),
      )
    }
    const error = { code: (e as { code?: string }).code ?? 'EUNEXPECTED', message: messageOf(e) }
    events.push(makeEvent('boot-failed', node, { error, action: 'reboot', record: { schema: 1, node, result: 'failed', style: d.style, requestedStyle: d.style, fallbacks: [], image, error } }, { image }))
    out = { node, ok: false, error: e, events }
  }
  const post = await fetch(`${server}/v1/nodes/${node}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ events }),
  })
  if (post.status !== 200) throw new Error(`events of ${node}: HTTP ${post.status} ${await post.text()}`)
  return out
}
