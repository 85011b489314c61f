/**
 * A route table for the head node: method + path pattern → handler, with no
 * sockets in it, so a test asks it which handler a request reaches (or which
 * 400/404/405 it gets) by calling {@link Router.route} with a method and a path.
 *
 * Patterns are `/`-separated segments: a literal, `:name` (one segment, kept
 * as a parameter and checked by the table's check for that name), `*` (any
 * one segment) or a final `**` (any rest, none included). A literal beats a
 * parameter: `:image` never matches `by-digest` when a pattern has the literal
 * `by-digest` at the same place.
 */
import { BootAgentError } from '../core/errors.js'
import { HttpProblem } from './http-util.js'

/** GET and HEAD: the methods of every read-only endpoint. */
export const READ_METHODS: readonly string[] = ['GET', 'HEAD']

/** One endpoint. */
export interface Route<H> {
  /** What the head's stats count the request as (`HeadStats.byRoute`); several routes may share one. */
  name: string
  /** Methods the endpoint answers; any other gets 405 with `Allow` listing these. */
  methods: readonly string[]
  /** Path pattern, e.g. `/v1/nodes/:node/boot`. */
  path: string
  handler: H
}

/**
 * A check that applies to every path its pattern matches, before any route
 * is chosen, in table order: methods allowed under a prefix (405 otherwise)
 * and the parameters its pattern names (checked by the table's `params`).
 */
export interface Guard {
  path: string
  methods?: readonly string[]
}

/** Returns the parameter when it is acceptable, else throws an {@link HttpProblem} (400). */
export type ParamCheck = (value: string) => string

export interface RouteTable<H> {
  routes: Route<H>[]
  guards: Guard[]
  /** A check for every parameter name the patterns use. */
  params: Record<string, ParamCheck>
}

/** A request target, split once. */
export interface Target {
  /** The URL parser's pathname (what problem messages name). */
  pathname: string
  /** Decoded segments of the raw path, after its leading `/`. */
  segments: string[]
  query: URLSearchParams
}

export interface RouteMatch<H> {
  route: Route<H>
  /** Parameters by name, checked. */
  params: Record<string, string>
  query: URLSearchParams
}

/** The protocol version the head speaks: the first segment of every path. */
export const API_VERSION = 'v1'

/**
 * Splits a request target (`req.url`). Segments come from the raw path: the
 * URL parser would resolve `..` away, and a client sending `..` must be told
 * no, not routed elsewhere. A bad %-escape is 400 EBADPATH; a path outside
 * `/v1` is 404 (both before authentication, as the head has always answered),
 * except the exact paths in `unversioned` (`/metrics`).
 */
export const parseTarget = (rawUrl: string, unversioned: readonly string[] = []): Target => {
  // Appended, not resolved: `//x/...` is a path here, never a host (resolving it threw on `//%00`, a 500).
  let url: URL
  try {
    url = new URL(rawUrl.startsWith('/') ? `http://head.invalid${rawUrl}` : rawUrl, 'http://head.invalid')
  } catch {
    throw new HttpProblem(400, 'EBADPATH', `request target ${JSON.stringify(rawUrl.slice(0, 200))} is not a path`)
  }
  const pathname = rawUrl.split('?')[0] ?? '/'
  let segments: string[]
  try {
    segments = pathname.split('/').slice(1).map((s) => decodeURIComponent(s))
  } catch {
    throw new HttpProblem(400, 'EBADPATH', `path ${JSON.stringify(pathname)} has a malformed %-escape`)
  }
  if (segments[0] !== API_VERSION && !unversioned.includes(pathname)) throw new HttpProblem(404, 'ENOTFOUND', `no such endpoint ${url.pathname} (this server speaks /${API_VERSION})`)
  return { pathname: url.pathname, segments, query: url.searchParams }
}

/** The 405 answer, with the `Allow` header listing `allowed`. */
export const methodNotAllowed = (allowed: readonly string[]): HttpProblem =>
  new HttpProblem(405, 'EMETHOD', `method not allowed here (allowed: ${allowed.join(', ')})`, { headers: { allow: allowed.join(', ') } })

interface Pattern {
  parts: string[]
  /** Ends in `**`. */
  rest: boolean
}

const compile = (path: string): Pattern => {
  const parts = path.split('/').slice(1)
  const rest = parts[parts.length - 1] === '**'
  return { parts: rest ? parts.slice(0, -1) : parts, rest }
}

export class Router<H> {
  private readonly routes: Array<{ route: Route<H>; pattern: Pattern }>
  private readonly guards: Array<{ guard: Guard; pattern: Pattern }>
  /** Literal segments by the pattern prefix they follow: where a parameter must not match. */
  private readonly literals = new Map<string, Set<string>>()

  constructor(private readonly table: RouteTable<H>) {
    this.routes = table.routes.map((route) => ({ route, pattern: compile(route.path) }))
    this.guards = table.guards.map((guard) => ({ guard, pattern: compile(guard.path) }))
    for (const { parts } of [...this.routes, ...this.guards].map((r) => r.pattern)) {
      parts.forEach((p, i) => {
        if (p.startsWith(':') || p === '*') return
        const key = parts.slice(0, i).join('/')
        const set = this.literals.get(key) ?? new Set<string>()
        set.add(p)
        this.literals.set(key, set)
      })
    }
    for (const { parts } of [...this.routes, ...this.guards].map((r) => r.pattern)) {
      for (const p of parts) if (p.startsWith(':') && !table.params[p.slice(1)]) throw new BootAgentError('EINTERNAL', `route pattern parameter ${p} has no check`)
    }
  }

  /** The parameters when `segments` match `pattern`, else undefined (unchecked). */
  private matchPattern(pattern: Pattern, segments: string[]): Array<[string, string]> | undefined {
    const { parts, rest } = pattern
    if (rest ? segments.length < parts.length : segments.length !== parts.length) return undefined
    const params: Array<[string, string]> = []
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] as string
      const s = segments[i] as string
      if (p === '*') continue
      if (p.startsWith(':')) {
        if (this.literals.get(parts.slice(0, i).join('/'))?.has(s)) return undefined
        params.push([p.slice(1), s])
      } else if (p !== s) return undefined
    }
    return params
  }

  private check(params: Array<[string, string]>): Record<string, string> {
    const out: Record<string, string> = {}
    for (const [name, value] of params) out[name] = (this.table.params[name] as ParamCheck)(value)
    return out
  }

  /**
   * The route `method` reaches at `target`: guards first (in table order),
   * then the routes whose pattern matches; 404 when none does, 405 when none
   * answers `method`.
   */
  match(method: string, target: Target): RouteMatch<H> {
    for (const { guard, pattern } of this.guards) {
      const params = this.matchPattern(pattern, target.segments)
      if (!params) continue
      if (guard.methods && !guard.methods.includes(method)) throw methodNotAllowed(guard.methods)
      this.check(params)
    }
    const found = this.routes.flatMap(({ route, pattern }) => {
      const params = this.matchPattern(pattern, target.segments)
      return params ? [{ route, params }] : []
    })
    if (!found.length) throw new HttpProblem(404, 'ENOTFOUND', `no such endpoint ${target.pathname}`)
    const hit = found.find((f) => f.route.methods.includes(method))
    if (!hit) throw methodNotAllowed([...new Set(found.flatMap((f) => f.route.methods))])
    return { route: hit.route, params: this.check(hit.params), query: target.query }
  }

  /** {@link parseTarget} then {@link match}: for a caller with nothing to do in between. */
  route(method: string, rawUrl: string): RouteMatch<H> {
    return this.match(method, parseTarget(rawUrl))
  }
}
