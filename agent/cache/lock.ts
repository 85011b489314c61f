/**
 * The cache's per-object write lock is the floor's one lock (core/lock.ts):
 * pid + boot id + nonce, a dead or earlier-boot owner's lock taken over
 * race-free. Re-exported for the cache's own modules.
 */
export { acquireLock, LOCK_POLL_MS, LOCK_TIMEOUT_MS, LockedError, type Lock, type LockOptions } from '../core/lock.js'
