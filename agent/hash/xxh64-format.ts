/**
 * The fast digest's format: xxh64 (seed 0) per fixed-size segment. Kept
 * apart from hash/xxh.ts so that reading the cache's metadata (cache/meta.ts)
 * does not load xxhash-wasm.
 */

/**
 * Bytes per xxh64 segment: part of the cache format (schemas 2 and 3), not a tuning
 * knob. Segment k is bytes [k·64 MiB, min(size, (k+1)·64 MiB)); segments are
 * hashed in parallel and a mismatch narrows the sha256 search to one segment.
 */
export const XXH64_SEGMENT_BYTES = 64 * 1024 * 1024

/** How many xxh64 segments an object of `size` bytes has (none when empty). */
export const segmentCount = (size: number): number => Math.ceil(size / XXH64_SEGMENT_BYTES)
