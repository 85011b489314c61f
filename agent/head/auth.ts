/**
 * The head's authentication and node-identity checks (docs/security.md):
 *
 * - who is asking ({@link authenticate}): the site-wide bearer token
 *   (`--token`), one node's own credential (`tokenSha256` in the nodes
 *   file), or nobody;
 * - whether they may do it ({@link authorize}): a request that speaks as
 *   node X (its descriptor, its events: every route under
 *   `/v1/nodes/:node/`) must come from X's bound addresses when the nodes
 *   file binds any, and with X's own credential when X has one. Another
 *   node's credential never speaks for X; the site token speaks for nodes
 *   that have no credential of their own (backwards compatible).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { ConfigError } from '../core/errors.js'
import { HttpProblem } from './http-util.js'
import { ownEntry } from './names.js'
import { addressAllowed, addressMatcher } from './node-identity.js'
import { configuredNode, type NodesConfig } from './nodes-config.js'

/** True when `given` is `want`, in time that does not depend on where they differ or on their lengths. */
export const sameToken = (given: string, want: string): boolean => {
  // Compare digests so the comparison takes the same time whatever the length.
  const a = createHash('sha256').update(given).digest()
  const b = createHash('sha256').update(want).digest()
  return timingSafeEqual(a, b)
}

const WWW_AUTHENTICATE = { 'www-authenticate': 'Bearer realm="boot-agent"' }

/** Throws 401 EAUTH (with `WWW-Authenticate`) unless `authorization` is `Bearer <token>`. */
export const checkBearer = (authorization: string | undefined, token: string): void => {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '')
  if (!m?.[1] || !sameToken(m[1], token)) {
    throw new HttpProblem(401, 'EAUTH', 'missing or wrong bearer token', { headers: WWW_AUTHENTICATE })
  }
}

/** The sha256 (lower-case hex) of a token: what the nodes file's `tokenSha256` holds. */
export const tokenSha256 = (token: string): string => createHash('sha256').update(token).digest('hex')

/** Who a request comes from, as far as its bearer token says. */
export type Principal = { kind: 'anonymous' } | { kind: 'site' } | { kind: 'node'; node: string }

// Per loaded config (a reload makes a new object): credential digest → node, and per node its address matcher.
const credentialIndex = new WeakMap<NodesConfig, Map<string, string>>()
const matchers = new WeakMap<NodesConfig, Map<string, ReturnType<typeof addressMatcher> | null>>()

const nodeByCredential = (config: NodesConfig): Map<string, string> => {
  let index = credentialIndex.get(config)
  if (!index) {
    index = new Map()
    for (const [node, e] of Object.entries(config.nodes)) if (e.tokenSha256) index.set(e.tokenSha256, node)
    credentialIndex.set(config, index)
  }
  return index
}

/**
 * Who sent the request. `site` is the head's `--token` (when it has one).
 * Throws 401 EAUTH when the head has a site token and the request carries
 * neither it nor a node credential. A token the head does not know, at a
 * head without a site token, is treated as no token (as before node
 * credentials existed): the node routes then refuse it where it matters.
 */
export const authenticate = (authorization: string | undefined, site: string | undefined, config: NodesConfig): Principal => {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '')
  const given = m?.[1]
  if (given !== undefined) {
    if (site !== undefined && sameToken(given, site)) return { kind: 'site' }
    // Looked up by digest: the lookup's timing depends on the digest, which tells nothing about the token.
    const node = nodeByCredential(config).get(tokenSha256(given))
    if (node !== undefined) return { kind: 'node', node }
  }
  if (site !== undefined) throw new HttpProblem(401, 'EAUTH', 'missing or wrong bearer token', { headers: WWW_AUTHENTICATE })
  return { kind: 'anonymous' }
}

/** Routes a node's own credential reaches besides its own node's: what a boot needs. */
const NODE_FETCH_ROUTES = new Set(['root', 'manifest', 'image'])

/** What a request asks for, as routing found it. */
export interface RouteCall {
  /** The route's name (routes.ts). */
  name: string
  /** The node the path names, when it names one. */
  node?: string
  /** The TCP peer's address (`req.socket.remoteAddress`). */
  remote?: string
}

const refuse = (message: string): HttpProblem => new HttpProblem(403, 'EIDENTITY', message)

/**
 * Throws 401/403 unless `who` may make `call` (docs/security.md, "What the
 * head checks"). A route under `/v1/nodes/:node/` (any but the node view
 * `node`) speaks as that node. Messages name the node and the caller's own
 * address, never a token, a digest or the bound addresses.
 */
export const authorize = (config: NodesConfig, who: Principal, call: RouteCall, site: string | undefined): void => {
  const claim = call.node !== undefined && call.name !== 'node' ? call.node : undefined
  if (claim === undefined) {
    // With a site token, a node credential reaches only what a boot fetches and its own view: the operator views need the site token.
    const ownView = who.kind === 'node' && call.name === 'node' && call.node === who.node
    if (who.kind === 'node' && site !== undefined && !NODE_FETCH_ROUTES.has(call.name) && !ownView) {
      throw refuse(`a node credential (node ${who.node}) may fetch images and speak for its own node only; route ${call.name} needs the site token`)
    }
    return
  }
  if (who.kind === 'node' && who.node !== claim) throw refuse(`node ${claim}: the bearer token is another node's credential, which speaks only for its own node`)
  const entry = configuredNode(config, claim)
  if (!entry) return // the handler answers 404 ENONODE
  if (entry.tokenSha256 && who.kind !== 'node') {
    if (who.kind === 'anonymous') {
      throw new HttpProblem(401, 'EAUTH', `node ${claim} must send its own credential (Authorization: Bearer, from its token file)`, { headers: WWW_AUTHENTICATE })
    }
    throw refuse(`node ${claim} has its own credential in the nodes file; the site token cannot speak for it`)
  }
  let perNode = matchers.get(config)
  if (!perNode) matchers.set(config, (perNode = new Map()))
  let matcher = perNode.get(claim)
  if (matcher === undefined) {
    const addresses = entry.addresses ?? (entry.group ? ownEntry(config.groups, entry.group)?.addresses : undefined)
    matcher = addresses ? addressMatcher(addresses) : null
    perNode.set(claim, matcher)
  }
  if (matcher && !addressAllowed(matcher, call.remote)) {
    throw refuse(`node ${claim} may not speak from ${call.remote ?? 'an unknown address'}: not among the addresses the nodes file binds it to`)
  }
}

/**
 * A node whose credential is the site token would authenticate as the site,
 * which may not speak for a node with its own credential: every request of
 * that node refused (403), silently. Refused with the nodes file instead.
 */
export const checkSiteTokenUnshared = (config: NodesConfig, site: string | undefined): void => {
  if (site === undefined) return
  const siteDigest = tokenSha256(site)
  for (const [node, e] of Object.entries(config.nodes)) {
    if (e.tokenSha256 === siteDigest) throw new ConfigError('--nodes', `nodes.${node}.tokenSha256 is the sha256 of the head's site token (--token): give the node its own token (docs/security.md); as it is, every request of the node would be refused (403)`)
  }
}
