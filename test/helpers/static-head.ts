/**
 * A minimal head node for boot tests: the boot-descriptor, manifest and image
 * files of the head-node protocol (docs/protocol.md) laid out in a directory
 * that a real nginx serves (test/helpers/nginx.ts: Range, access log). It
 * answers only GETs, which is all the boot stage does; the reference head
 * node (agent/head) is tested on its own.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildManifest } from '../../agent/manifest/build.js'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import type { Manifest } from '../../agent/manifest/types.js'

export interface PublishStaticOptions {
  /** The directory nginx serves. */
  root: string
  /** The server's base URL (e.g. nginx.url). */
  server: string
  node: string
  image: string
  name: string
  style?: 'disked' | 'rwram' | 'roram'
  partitions?: { cache?: string | null; root?: string | null }
  policies?: Record<string, string>
  /** Chunking average (small images: small chunks so repairs are partial). */
  avgChunk?: number
}

export interface Published {
  manifest: Manifest
  sha256: string
  size: number
  imageUrlPath: string
}

export const publishStatic = async (o: PublishStaticOptions): Promise<Published> => {
  const probe = await buildManifest(o.image, { name: o.name, urls: ['http://placeholder/'], workers: 0 })
  const sha = probe.sha256
  const dir = join(o.root, 'v1', 'images', 'by-digest', sha)
  await mkdir(dir, { recursive: true })
  const imageUrlPath = `/v1/images/by-digest/${sha}/image`
  await copyFile(o.image, join(dir, 'image'))
  const manifest = await buildManifest(o.image, {
    name: o.name,
    urls: [o.server + imageUrlPath],
    workers: 0,
    ...(o.avgChunk ? { chunking: { algorithm: 'fastcdc-gear-v1', minSize: o.avgChunk / 4, avgSize: o.avgChunk, maxSize: o.avgChunk * 4 } } : {}),
  })
  await writeFile(join(dir, 'manifest'), serializeManifest(manifest))
  const nodeDir = join(o.root, 'v1', 'nodes', o.node)
  await mkdir(nodeDir, { recursive: true })
  await writeFile(
    join(nodeDir, 'boot'),
    JSON.stringify({
      schema: 1,
      node: o.node,
      ...(o.style ? { style: o.style } : {}),
      image: { name: o.name, sha256: sha, size: manifest.size, manifest: `/v1/images/by-digest/${sha}/manifest` },
      partitions: o.partitions ?? {},
      policies: o.policies ?? {},
    }),
  )
  return { manifest, sha256: sha, size: manifest.size, imageUrlPath }
}
