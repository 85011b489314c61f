/**
 * Node identity in the nodes file (issue #22, docs/security.md): which
 * addresses a node may speak from (`addresses`, per node or per group) and
 * which credential is its own (`tokenSha256`, per node). Parsed from
 * `unknown` with an error naming the field; the checks are pure functions
 * the head's authorisation (auth.ts) calls.
 *
 * ```json
 * "groups": { "rack1": { "addresses": ["10.1.0.0/24"] } },
 * "nodes":  { "n0001": { "group": "rack1", "addresses": ["10.1.0.1"],
 *                        "tokenSha256": "<sha256 hex of the node's token>" } }
 * ```
 * The file holds the token's sha256, never the token: a nodes file that is
 * read by someone else does not let them speak for the node. Tokens must be
 * random (32 bytes from a CSPRNG), so the digest cannot be reversed by guessing.
 */
import { BlockList, isIP } from 'node:net'
import { ConfigError } from '../core/errors.js'

/** Most addresses/CIDRs one node or group may list (a bound on what a check walks). */
export const MAX_BOUND_ADDRESSES = 256

/** Parses `addresses`: a non-empty list of IPv4/IPv6 addresses or CIDRs (`10.1.0.0/24`, `fd00::/64`). */
export const parseAddresses = (field: string, v: unknown): string[] => {
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_BOUND_ADDRESSES) {
    throw new ConfigError(field, `must be a list of 1 to ${MAX_BOUND_ADDRESSES} addresses or CIDRs like "10.1.0.7" or "10.1.0.0/24"`)
  }
  return v.map((a: unknown, i) => {
    const f = `${field}[${i}]`
    if (typeof a !== 'string') throw new ConfigError(f, `must be an address or CIDR string (got ${JSON.stringify(a)})`)
    const [ip = '', prefix, ...rest] = a.split('/')
    const family = isIP(ip)
    const max = family === 6 ? 128 : 32
    if (family === 0 || rest.length > 0 || (prefix !== undefined && !(/^\d{1,3}$/.test(prefix) && Number(prefix) <= max))) {
      throw new ConfigError(f, `${JSON.stringify(a)} is not an IPv4/IPv6 address or CIDR (ADDRESS/BITS, BITS at most ${max})`)
    }
    return a
  })
}

/** Parses `tokenSha256`: the sha256 of the node's token as 64 lower-case hex digits. */
export const parseTokenSha256 = (field: string, v: unknown): string => {
  if (typeof v !== 'string' || !/^[0-9a-f]{64}$/.test(v)) {
    throw new ConfigError(field, 'must be the sha256 of the node\'s token as 64 lower-case hex digits (printf %s "$TOKEN" | sha256sum), never the token itself')
  }
  return v
}

/** Addresses as a matcher; IPv4-mapped IPv6 peers (`::ffff:10.1.0.7`, a dual-stack listener) match their IPv4 entries. */
export const addressMatcher = (addresses: readonly string[]): BlockList => {
  const list = new BlockList()
  for (const a of addresses) {
    const [ip = '', prefix] = a.split('/')
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) list.addAddress(ip, type)
    else list.addSubnet(ip, Number(prefix), type)
  }
  return list
}

/** True when `remote` (a socket's remoteAddress) is one of the bound `addresses`. */
export const addressAllowed = (list: BlockList, remote: string | undefined): boolean => {
  if (!remote) return false
  const family = isIP(remote)
  return family !== 0 && list.check(remote, family === 6 ? 'ipv6' : 'ipv4')
}

/** Throws ConfigError when two nodes list the same credential (one could speak for the other). */
export const checkDistinctCredentials = (nodes: Readonly<Record<string, { tokenSha256?: string }>>): void => {
  const owner = new Map<string, string>()
  for (const [node, e] of Object.entries(nodes)) {
    if (!e.tokenSha256) continue
    const other = owner.get(e.tokenSha256)
    if (other !== undefined) throw new ConfigError(`nodes.${node}.tokenSha256`, `is the same as nodes.${other}.tokenSha256: each node needs its own token`)
    owner.set(e.tokenSha256, node)
  }
}
