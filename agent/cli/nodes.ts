/**
 * `boot-agent nodes --head URL [--json]`: every node the head knows, one row
 * each (`GET /v1/nodes`): the image it should boot, the digest it runs, its
 * last boot, that boot's fallbacks and its error counts.
 */
import fetch from 'node-fetch'
import { BootAgentError, ConfigError, HttpError } from '../core/errors.js'
import { agentFor, failedRequestMessage } from '../transport/trust.js'
import { parseServerUrl } from '../boot/cmdline.js'
import { type Command, parseCommandArgs } from './command.js'

const USAGE = `usage: boot-agent nodes --head URL [--json] [--token T]

Prints every node the head node knows (those in its nodes file and those that
sent events) from GET URL/v1/nodes: the image the nodes file gives it, the
digest it runs now, its last boot (time, result, style), that boot's
fallbacks, and its error counts (integrity, squashfs, io). A table, or with
--json the head's answer as is.

options:
  --head URL   the head node, e.g. http://head:8080 or https://head:8443
  --json       print the JSON answer instead of a table
  --token T    bearer token when the head requires one (or BOOT_AGENT_HEAD_TOKEN)

https: the site CA is trusted as for fetch (BOOT_AGENT_CA, or /etc/boot-agent/ca.pem).`

/** Longest wait for the head's answer. */
const REQUEST_TIMEOUT_MS = 15_000

/** The row shape of GET /v1/nodes (agent/head/views.ts NodeRow), as read from the wire. */
interface Row {
  node: string
  configured?: boolean
  image?: string | null
  running?: string | null
  lastBoot?: { time: string; result: string; style: string | null } | null
  fallbacks?: string[]
  errors?: { integrity: number; squashfs: number; io: number }
}

/** The table lines for `rows`: a header, then one line per node, columns padded. */
export const formatNodesTable = (rows: readonly Row[]): string[] => {
  const cells = rows.map((r) => [
    r.node,
    r.image ?? '-',
    r.running ? r.running.slice(0, 12) : '-',
    r.lastBoot ? String(r.lastBoot.time).replace(/\.\d+Z$/, 'Z') : '-',
    r.lastBoot ? `${r.lastBoot.result}${r.lastBoot.style ? `/${r.lastBoot.style}` : ''}` : '-',
    r.fallbacks?.length ? r.fallbacks.map((f) => f.split(':')[0]).join(',') : '-',
    r.errors ? `${r.errors.integrity}/${r.errors.squashfs}/${r.errors.io}` : '-',
  ])
  const head = ['NODE', 'IMAGE', 'RUNNING', 'LAST BOOT', 'RESULT', 'FALLBACKS', 'ERRORS(I/SQ/IO)']
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)))
  const line = (c: string[]): string => c.map((v, i) => (i === c.length - 1 ? v : v.padEnd(widths[i] ?? 0))).join('  ')
  return [line(head), ...cells.map(line)]
}

/**
 * The rows of a `/v1/nodes` answer, or EHTTP naming the URL: a web server or
 * rack cache answering 200 with something else used to end in a bare
 * SyntaxError or `rows.map is not a function`.
 */
const nodeRows = (text: string, url: string): Row[] => {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  const nodes = typeof body === 'object' && body !== null ? (body as { nodes?: unknown }).nodes : undefined
  if (!Array.isArray(nodes) || !nodes.every((r: unknown) => typeof r === 'object' && r !== null && typeof (r as Row).node === 'string')) {
    throw new BootAgentError('EHTTP', `${url} answered, but not with a head node's node list ({"nodes": [...]}): is --head the head node, not a mirror or another server? (the answer began ${JSON.stringify(text.slice(0, 80))})`, { url })
  }
  return nodes as Row[]
}

export const command: Command = {
  name: 'nodes',
  summary: 'list the nodes a head node knows: image, running digest, last boot, errors',
  usage: USAGE,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('nodes', argv, {
      head: { type: 'string' },
      json: { type: 'boolean' },
      token: { type: 'string' },
    })
    if (positionals.length) throw new ConfigError('boot-agent nodes', `unexpected argument ${JSON.stringify(positionals[0])}`)
    if (!values.head) throw new ConfigError('--head', 'is required (the head node URL, e.g. http://head:8080)')
    // http(s), no query, and no credentials (not echoed: a password would land in the error and the log).
    const base = new URL(parseServerUrl('--head', values.head))
    const url = new URL('/v1/nodes', base).href
    const token = values.token ?? process.env.BOOT_AGENT_HEAD_TOKEN
    let text: string
    let status: number
    try {
      const res = await fetch(url, {
        agent: agentFor(new URL(url)),
        headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
      })
      status = res.status
      text = await res.text()
    } catch (e) {
      if (ctx.signal.aborted) throw ctx.signal.reason
      throw new BootAgentError('ENETWORK', failedRequestMessage(url, e), { url }, { cause: e })
    }
    if (status !== 200) throw new HttpError({ status, url, message: `HTTP ${status} from ${url}: ${text.trim().slice(0, 500)}` })
    const rows = nodeRows(text, url)
    if (values.json) ctx.out(text.trim())
    else if (rows.length === 0) ctx.out(`no nodes yet: the nodes file lists none and none has sent events (head ${values.head})`)
    else for (const l of formatNodesTable(rows)) ctx.out(l)
    return 0
  },
}
