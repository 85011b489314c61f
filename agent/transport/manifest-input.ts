/**
 * Manifest parsing for the transport. Until the manifest module lands
 * (agent/manifest/parse.ts with signatures), this is a strict structural
 * check of the contract in agent/manifest/types.ts; signature checking is
 * refused rather than skipped.
 */
import { ManifestError, SignatureError } from '../errors.js'
import type { Manifest } from '../manifest/types.js'
import { chunkListProblem } from '../cache/meta.js'

export const parseManifestJson = (text: string, opts: { baseUrl: string; publicKey?: string }): Manifest => {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw new ManifestError('(document)', `not JSON: ${(e as Error).message}`, { url: opts.baseUrl })
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ManifestError('(document)', 'not a JSON object')
  const o = v as Record<string, unknown>
  if (o.schema !== 1) throw new ManifestError('schema', `unknown schema ${JSON.stringify(o.schema)}`)
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256)) throw new ManifestError('sha256', 'not lower-case hex sha256')
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) throw new ManifestError('size', 'not a non-negative integer')
  const bad = chunkListProblem(o.chunks, o.size)
  if (bad) throw new ManifestError('chunks', bad)
  if (!Array.isArray(o.urls) || !o.urls.every((u) => typeof u === 'string')) throw new ManifestError('urls', 'not a list of strings')
  const urls = (o.urls as string[]).map((u, i) => {
    let abs: URL
    try {
      abs = new URL(u, opts.baseUrl)
    } catch {
      throw new ManifestError(`urls[${i}]`, `not a URL: ${JSON.stringify(u)}`)
    }
    if (abs.protocol !== 'http:' && abs.protocol !== 'https:') throw new ManifestError(`urls[${i}]`, `not http(s): ${abs.protocol}`)
    return abs.href
  })
  if (opts.publicKey) throw new SignatureError('signature checking needs the manifest module (not merged yet)')
  return {
    schema: 1,
    name: typeof o.name === 'string' ? o.name : '',
    format: typeof o.format === 'string' ? o.format : 'squashfs',
    created: typeof o.created === 'string' ? o.created : '',
    size: o.size,
    sha256: o.sha256,
    chunking: o.chunking as Manifest['chunking'],
    chunks: o.chunks as Manifest['chunks'],
    urls,
  }
}
