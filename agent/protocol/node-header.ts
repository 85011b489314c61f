/**
 * The header in which a node names itself on every request it makes
 * (descriptor, manifest, image bytes, events): the head spreads its
 * Retry-After by it when it sheds load and logs who asked (head/server.ts),
 * and a site's mirrors can log it. An id that is not known yet, or is not a
 * safe name (protocol/names.ts: no CR/LF, nothing a header could be split
 * with), is never sent.
 */
import { isSafeName } from './names.js'

/** `X-Boot-Agent-Node`, lower-cased as Node's HTTP servers show it. */
export const NODE_HEADER = 'x-boot-agent-node'

/** The boot stage's node id before it is resolved (events of a boot that failed that early are still sent). */
export const UNKNOWN_NODE = 'unknown'

/** `{X-Boot-Agent-Node: node}`, or no header when `node` is missing, {@link UNKNOWN_NODE} or not a safe name. */
export const nodeHeaders = (node: string | undefined): Record<string, string> =>
  node !== undefined && node !== UNKNOWN_NODE && isSafeName(node) ? { [NODE_HEADER]: node } : {}
