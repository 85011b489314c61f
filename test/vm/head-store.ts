/**
 * What the VM tests do to the reference head's store from outside: change a
 * published image's bytes in place (the incident in
 * reference/image-projection-inconsistent.txt: the head keeps serving what is on
 * its disk under the pinned digest), and read the events it stored.
 */
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'

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
