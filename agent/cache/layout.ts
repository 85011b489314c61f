/**
 * Where things live inside a cache directory (the shared contract, SPEC §5):
 *
 *   <dir>/objects/sha256/<2 hex>/<62 hex>            a verified image, read-only
 *   <dir>/objects/sha256/<2 hex>/<62 hex>.meta.json  its metadata (meta.ts)
 *   <dir>/tmp/<sha256>.part                          a download in progress
 *   <dir>/tmp/<sha256>.state.json                    which chunks of it are verified
 *   <dir>/tmp/<sha256>.lock                          who is writing that object
 *
 * Everything is root-only: directories 0700, files 0600.
 */
import { join } from 'node:path'

export const SHA256_HEX = /^[0-9a-f]{64}$/
export const DIR_MODE = 0o700
export const FILE_MODE = 0o600
export const META_SUFFIX = '.meta.json'

export const isSha256 = (s: string): boolean => SHA256_HEX.test(s)

export const objectsRoot = (dir: string): string => join(dir, 'objects', 'sha256')
export const tmpDir = (dir: string): string => join(dir, 'tmp')
export const objectPath = (dir: string, sha: string): string => join(objectsRoot(dir), sha.slice(0, 2), sha.slice(2))
export const metaPath = (dir: string, sha: string): string => objectPath(dir, sha) + META_SUFFIX
export const partPath = (dir: string, sha: string): string => join(tmpDir(dir), `${sha}.part`)
export const statePath = (dir: string, sha: string): string => join(tmpDir(dir), `${sha}.state.json`)
export const lockPath = (dir: string, sha: string): string => join(tmpDir(dir), `${sha}.lock`)
