/**
 * Shared fixtures for the head-node tests: a store with published images, a
 * nodes file, a running head node, and small HTTP helpers.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Manifest } from '../../agent/manifest/types.js'
import { publishImage, type PublishResult } from '../../agent/head/publish.js'
import type { Architecture } from '../../agent/head/names.js'
import { buildManifest, serializeManifest } from '../../agent/manifest/index.js'

/** Publishes `bytes` as `name` into `store` (the image file is written next to it first). */
export const publishBytes = async (
  store: string,
  name: string,
  bytes: Uint8Array,
  opts: { arch?: Architecture; mirrors?: string[]; dir?: string } = {},
): Promise<PublishResult> => {
  const file = join(opts.dir ?? store, `.src-${name}-${randomBytes(4).toString('hex')}.img`)
  await writeFile(file, bytes)
  return publishImage({
    image: file,
    name,
    store,
    arch: opts.arch ?? 'x86_64',
    ...(opts.mirrors ? { mirrors: opts.mirrors } : {}),
    buildManifest: (path, o) => buildManifest(path, { ...o, workers: 0 }),
    writeManifest: serializeManifest,
  })
}

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Deterministic pseudo-random bytes (fast; xorshift), so images differ by seed. */
export const imageBytes = (size: number, seed = 1): Buffer => {
  const out = Buffer.allocUnsafe(size)
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out.writeUInt32LE(x, Math.min(i, size - 4))
  }
  return out
}

export const writeNodes = async (path: string, config: unknown): Promise<string> => {
  await writeFile(path, JSON.stringify(config, null, 2))
  return path
}

export const readManifest = async (path: string): Promise<Manifest> => JSON.parse(await readFile(path, 'utf8')) as Manifest

export interface Answer {
  status: number
  headers: Headers
  json: unknown
  text: string
}

/** fetch + read the body as text and (when it parses) JSON. */
export const call = async (url: string, init: RequestInit = {}): Promise<Answer> => {
  const res = await fetch(url, init)
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, headers: res.headers, json, text }
}

export const postEvents = (base: string, node: string, events: unknown[], headers: Record<string, string> = {}): Promise<Answer> =>
  call(`${base}/v1/nodes/${node}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ events }),
  })
