/**
 * The fs-verity file digest (issue #19): what `fsverity digest FILE` prints
 * and what the kernel measures (`fsverity measure`, FS_IOC_MEASURE_VERITY)
 * for a file sealed with the default parameters: sha256, 4096-byte blocks,
 * no salt. Computed here so `manifest` and `publish` can put it in the
 * manifest without the kernel (the head's filesystem need not have fs-verity).
 *
 * The format (Documentation/filesystems/fsverity.rst, "File digest
 * computation" and "Merkle tree"):
 *  - the data is cut into 4096-byte blocks, the last zero-padded; each block's
 *    sha256 forms level 0; while a level holds more than one hash, its hashes
 *    are concatenated, cut into 4096-byte blocks (the last zero-padded), and
 *    each block hashed to form the next level. The single hash left is the
 *    root hash (for a one-block file, that block's hash; for an empty file,
 *    all zeros);
 *  - the digest is the sha256 of the 256-byte `fsverity_descriptor`:
 *    version 1, hash_algorithm 1 (sha256), log_blocksize 12, salt_size 0,
 *    4 reserved bytes, data_size (le64), root_hash (64 bytes, zero-padded),
 *    salt (32 bytes), 144 reserved bytes.
 */
import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import { BootAgentError } from '../core/errors.js'

export const FSVERITY_BLOCK_BYTES = 4096
const HASH_BYTES = 32
const DESCRIPTOR_BYTES = 256
const READ_BYTES = 256 * FSVERITY_BLOCK_BYTES
const SHA256_ALG = 1
const LOG_BLOCK_SIZE = 12

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

/** One level up: the hashes of `hashes` (concatenated) cut into zero-padded blocks. */
const nextLevel = (hashes: Buffer): Buffer => {
  const blocks = Math.ceil(hashes.length / FSVERITY_BLOCK_BYTES)
  const out = Buffer.alloc(blocks * HASH_BYTES)
  const block = Buffer.alloc(FSVERITY_BLOCK_BYTES)
  for (let i = 0; i < blocks; i++) {
    block.fill(0)
    hashes.copy(block, 0, i * FSVERITY_BLOCK_BYTES, Math.min(hashes.length, (i + 1) * FSVERITY_BLOCK_BYTES))
    sha256(block).copy(out, i * HASH_BYTES)
  }
  return out
}

/** The root hash from level 0 (the data blocks' hashes, concatenated). Pure. */
export const rootHashOf = (level0: Buffer): Buffer => {
  if (level0.length === 0) return Buffer.alloc(HASH_BYTES)
  let level = level0
  while (level.length > HASH_BYTES) level = nextLevel(level)
  return level
}

/** The fs-verity digest from the data size and root hash, as `sha256:HEX` is printed without its prefix. Pure. */
export const fsverityDigestOf = (dataSize: number, rootHash: Buffer): string => {
  const d = Buffer.alloc(DESCRIPTOR_BYTES)
  d[0] = 1
  d[1] = SHA256_ALG
  d[2] = LOG_BLOCK_SIZE
  d[3] = 0 // salt size
  d.writeBigUInt64LE(BigInt(dataSize), 8)
  rootHash.copy(d, 16)
  return sha256(d).toString('hex')
}

/** The digest of bytes in memory (tests, small files). */
export const fsverityDigestOfBytes = (data: Uint8Array): string => {
  const blocks = Math.ceil(data.length / FSVERITY_BLOCK_BYTES)
  const level0 = Buffer.alloc(blocks * HASH_BYTES)
  const block = Buffer.alloc(FSVERITY_BLOCK_BYTES)
  for (let i = 0; i < blocks; i++) {
    block.fill(0)
    block.set(data.subarray(i * FSVERITY_BLOCK_BYTES, (i + 1) * FSVERITY_BLOCK_BYTES))
    sha256(block).copy(level0, i * HASH_BYTES)
  }
  return fsverityDigestOf(data.length, rootHashOf(level0))
}

/**
 * The fs-verity digest of the file at `path` (lower-case hex, what
 * `fsverity digest` prints after `sha256:`). Reads the file once; level 0
 * (32 bytes per 4 KiB: 8 MiB per GiB) is held in memory.
 */
export const fsverityDigestOfFile = async (path: string, opts: { signal?: AbortSignal } = {}): Promise<string> => {
  const fh = await open(path, 'r')
  try {
    const size = (await fh.stat()).size
    const level0 = Buffer.alloc(Math.ceil(size / FSVERITY_BLOCK_BYTES) * HASH_BYTES)
    const buf = Buffer.alloc(READ_BYTES)
    let pos = 0
    while (pos < size) {
      opts.signal?.throwIfAborted()
      const want = Math.min(READ_BYTES, size - pos)
      let got = 0
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, pos + got)
        if (bytesRead === 0) throw new BootAgentError('EHASHIO', `${path} ended at ${pos + got} bytes, expected ${size} (changed while hashed)`, { path })
        got += bytesRead
      }
      if (got < READ_BYTES) buf.fill(0, got, Math.ceil(got / FSVERITY_BLOCK_BYTES) * FSVERITY_BLOCK_BYTES)
      for (let off = 0; off < got; off += FSVERITY_BLOCK_BYTES) {
        sha256(buf.subarray(off, off + FSVERITY_BLOCK_BYTES)).copy(level0, ((pos + off) / FSVERITY_BLOCK_BYTES) * HASH_BYTES)
      }
      pos += got
    }
    return fsverityDigestOf(size, rootHashOf(level0))
  } finally {
    await fh.close()
  }
}
