/**
 * Validation of names that arrive from the network or the command line and
 * may become parts of paths in the head node's store (SPEC §12): image names,
 * node ids, digests. Anything that fails is refused, never cleaned up. They
 * are part of the protocol (docs/protocol.md, "Names"), so node and head
 * share them from here.
 */

/** Longest image name or node id accepted. */
export const MAX_NAME_LENGTH = 128

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:+-]*$/
const SHA256 = /^[0-9a-f]{64}$/

/**
 * Why `name` cannot be an image name or node id, or `undefined` when it can.
 * Allowed: letters, digits and `. _ : + -`, starting with a letter or digit,
 * no `..`, at most {@link MAX_NAME_LENGTH} characters. So no `/`, no NUL, no
 * absolute path, no `.` or `..` component can ever reach the filesystem.
 * `:` is there for node ids that are MAC addresses (`aa:bb:cc:dd:ee:ff`, the
 * boot stage's last-resort id); `@` is not, it separates a pinned digest.
 */
export const nameProblem = (name: string): string | undefined => {
  if (name.length === 0) return 'is empty'
  if (name.length > MAX_NAME_LENGTH) return `is longer than ${MAX_NAME_LENGTH} characters`
  if (name.includes('/') || name.includes('\\')) return 'contains a path separator'
  if (name.includes('..')) return 'contains ".."'
  if (!NAME.test(name)) return 'may contain only letters, digits and . _ : + - (starting with a letter or digit)'
  return undefined
}

/** True for a string {@link nameProblem} finds nothing wrong with. */
export const isSafeName = (name: unknown): name is string => typeof name === 'string' && nameProblem(name) === undefined

/** True for a lower-case hex sha256. */
export const isSha256 = (v: unknown): v is string => typeof v === 'string' && SHA256.test(v)
