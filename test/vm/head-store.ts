/**
 * What the VM tests do to the reference head's store from outside: change a
 * published image's bytes in place (the incident in
 * reference/image-projection-inconsistent.txt: the head keeps serving what is on
 * its disk under the pinned digest), and read the events it stored.
 */
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { PublishResult } from '../../agent/head/publish.js'
import type { Head } from '../../agent/head/server.js'

/** Flips 64 bytes a third of the way into the stored object of `sha`; returns what puts them back. */
export const changeServedBytes = async (store: string, sha: string): Promise<() => Promise<void>> => {
  const storeObject = join(store, 'objects', 'sha256', sha.slice(0, 2), sha.slice(2))
  const original = await readFile(storeObject)
  const at = Math.floor(original.length / 3)
  const fh = await open(storeObject, 'r+')
  await fh.write(Buffer.from(original.subarray(at, at + 64).map((b) => b ^ 0x5a)), 0, 64, at)
  await fh.close()
  return async (): Promise<void> => {
    const w = await open(storeObject, 'r+')
    await w.write(original, 0, original.length, 0)
    await w.close()
  }
}

export interface StoredEvent {
  kind: string
  data: { error?: { code?: string } }
}

/** The events the head stored durably for `node` (<store>/events/<node>.jsonl). */
export const storedEvents = async (store: string, node: string): Promise<StoredEvent[]> =>
  (await readFile(join(store, 'events', `${node}.jsonl`), 'utf8').catch(() => ''))
    .split('\n').filter(Boolean).map((l) => JSON.parse(l) as StoredEvent)

/** Whether `events` hold the refusal of an image whose bytes did not match its digest. */
export const refusedForIntegrity = (events: StoredEvent[]): boolean =>
  events.some((e) => e.kind === 'integrity' || (e.kind === 'boot-failed' && e.data.error?.code === 'EINTEGRITY'))

/** Publishes `image` as `name` into the head's `store`, its manifest built on this thread (the cores are QEMU's). */
export const publishVmImage = async (image: string, name: string, store: string): Promise<PublishResult> => {
  const { publishImage } = await import('../../agent/head/publish.js')
  const { buildManifest, serializeManifest } = await import('../../agent/manifest/index.js')
  return publishImage({ image, name, store, arch: 'x86_64', buildManifest: (p, o) => buildManifest(p, { ...o, workers: 0 }), writeManifest: serializeManifest })
}

/** Starts the reference head on loopback with `defaults` for every one of `nodes` (nodes.json written in `dir`). */
export const startVmHead = async (dir: string, store: string, defaults: Record<string, unknown>, nodes: readonly string[]): Promise<Head> => {
  const { startHead } = await import('../../agent/head/server.js')
  const nodesFile = join(dir, 'nodes.json')
  await writeFile(nodesFile, JSON.stringify({ schema: 1, defaults, nodes: Object.fromEntries(nodes.map((n) => [n, {}])) }))
  return startHead({ store, nodes: nodesFile, listen: '127.0.0.1:0' })
}
