/**
 * Answers from the image store: manifests (by digest or by a name's current
 * digest) and image bytes (from the store's file, with Range, or a 302 to the
 * manifest's first mirror when the head is told to redirect).
 */
import { open } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isErrno } from '../core/errors.js'
import { HttpProblem } from './http-util.js'
import { sendFile } from './range.js'
import type { ImageStore } from './store.js'

/**
 * Sends the manifest stored for `sha256` (404 ENOIMAGE naming `what` when
 * there is none, or no digest). Returns the body bytes sent (0 for HEAD).
 */
export const sendManifest = async (res: ServerResponse, store: ImageStore, sha256: string | undefined, what: string, head: boolean): Promise<number> => {
  const text = sha256 ? await store.manifestText(sha256) : undefined
  if (!sha256 || text === undefined) throw new HttpProblem(404, 'ENOIMAGE', `no manifest for ${what}`)
  const bytes = Buffer.byteLength(text)
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(bytes), 'x-image-sha256': sha256, 'cache-control': 'no-cache' })
  if (head) {
    res.end()
    return 0
  }
  res.end(text)
  return bytes
}

/** The first http(s) URL of a manifest's `urls`, when it has one. */
const firstMirror = (manifestText: string | undefined): string | undefined => {
  const urls: unknown = manifestText ? (JSON.parse(manifestText) as { urls?: unknown }).urls : undefined
  return Array.isArray(urls) ? urls.find((u): u is string => typeof u === 'string' && /^https?:\/\//.test(u)) : undefined
}

export interface SendImageOptions {
  head: boolean
  /** Answer with a 302 to the manifest's first mirror URL when it has one. */
  redirectToMirrors?: boolean
  /** Called with the size of each chunk of image bytes sent. */
  onBytes?: (bytes: number) => void
  /** Called when the body stream ends early. */
  onCut?: (err: unknown) => void
}

/** Sends the image bytes stored for `sha256` (404 ENOIMAGE when the store has no such object or lost its file). */
export const sendImage = async (req: IncomingMessage, res: ServerResponse, store: ImageStore, sha256: string, opts: SendImageOptions): Promise<void> => {
  const record = await store.objectRecord(sha256)
  if (!record) throw new HttpProblem(404, 'ENOIMAGE', `no image with digest ${sha256} in the store`)
  if (opts.redirectToMirrors) {
    const mirror = firstMirror(await store.manifestText(sha256))
    if (mirror) {
      res.writeHead(302, { location: mirror, 'content-length': '0' })
      res.end()
      return
    }
  }
  const fh = await open(store.objectPath(sha256), 'r').catch((e: unknown) => {
    if (isErrno(e, 'ENOENT')) throw new HttpProblem(404, 'ENOIMAGE', `the store's file for ${sha256} is missing (see GET /v1/consistency)`)
    throw e
  })
  await sendFile(req, res, fh, { head: opts.head, onBytes: opts.onBytes, onCut: opts.onCut })
}
