/**
 * Whom the agent trusts over https: Node's own root certificates plus an
 * optional site CA (the head node's or a mirror's), read by the agent itself
 * at its first https request. Every request the agent makes (boot
 * descriptor, manifest, image bytes, events) takes its agent from here.
 *
 * Why not NODE_EXTRA_CA_CERTS: Node 20 reads that file, and with it builds a
 * store of its ~140 bundled roots, when *every* process starts, https or not
 * (nodejs/node#40524). Measured here: `node -e ''` 39 ms without it, 68–73 ms
 * with a one-certificate file, 110–116 ms with Debian's whole bundle. A boot
 * from a cached image over plain http, `verify` and the daemon make no https
 * request at all and should not pay for one. The variable still works
 * (Node applies it to every connection) when an operator sets it.
 */
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { isIP } from 'node:net'
import { rootCertificates } from 'node:tls'
import { ConfigError, isErrno, messageOf } from '../core/errors.js'
import { errorCodes, networkReason, tlsFailureCode } from '../core/retry.js'

/** Where the dracut module installs the site CA (`--ca FILE`, module-setup.sh); used when present. */
export const SITE_CA_FILE = '/etc/boot-agent/ca.pem'
/** Environment variable naming another site CA file (then it must exist). */
export const SITE_CA_ENV = 'BOOT_AGENT_CA'

const PEM_CERT = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/**
 * The certificates of the site CA file, validated: undefined when no file is
 * configured and none is installed at {@link SITE_CA_FILE}. A file named by
 * BOOT_AGENT_CA must exist; any file used must hold only PEM certificates
 * that parse (a typo must not silently fall back to trusting less, or fail
 * later as an obscure TLS error). A self-signed server certificate may be
 * given as its own CA.
 */
export const readSiteCa = (env: NodeJS.ProcessEnv = process.env): { file: string; certs: string[] } | undefined => {
  const named = env[SITE_CA_ENV]
  const file = named || SITE_CA_FILE
  const key = named ? SITE_CA_ENV : `site CA ${SITE_CA_FILE}`
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (e) {
    if (!named && isErrno(e, 'ENOENT')) return undefined
    throw new ConfigError(key, `cannot read the CA file ${file}: ${messageOf(e)}`, { file })
  }
  const certs = text.match(PEM_CERT) ?? []
  if (certs.length === 0) throw new ConfigError(key, `${file} holds no PEM certificate (expected "-----BEGIN CERTIFICATE-----" blocks)`, { file })
  certs.forEach((pem, i) => {
    try {
      new X509Certificate(pem)
    } catch (e) {
      throw new ConfigError(key, `certificate ${i + 1} of ${certs.length} in ${file} is not usable: ${messageOf(e)}`, { file })
    }
  })
  return { file, certs }
}

/** What to do about a certificate the agent does not trust. */
const TLS_HINT = `if the server's certificate is signed by a site CA, give it to the agent: the dracut module's --ca FILE (installed as ${SITE_CA_FILE}), or ${SITE_CA_ENV}=FILE`

/** `address:port` of the refused connection in `e`'s cause chain (Node's errno error carries them), if any. */
const refusedAddress = (e: unknown): string | undefined => {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; depth++) {
    const c = cur as { address?: unknown; port?: unknown; cause?: unknown; message?: unknown }
    if (typeof c.address === 'string' && typeof c.port === 'number') return c.address.includes(':') ? `[${c.address}]:${c.port}` : `${c.address}:${c.port}`
    // node-fetch keeps only the message of the errno error: "connect ECONNREFUSED 127.0.0.1:9".
    const m = typeof c.message === 'string' ? /\bconnect ECONNREFUSED (\S+:\d+)/.exec(c.message) : null
    if (m?.[1]) return m[1].includes('::') && !m[1].startsWith('[') ? `[${m[1].replace(/:(\d+)$/, ']:$1')}` : m[1]
    cur = c.cause
  }
  return undefined
}

/**
 * Whether the refused `address:port` may be `url`'s own endpoint: the same
 * port, and the same address when the URL names one (a host name may resolve
 * to it). False only when it is certainly another: a redirect was followed.
 */
const mayBeUrlEndpoint = (refused: string, url: string): boolean => {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(refused)
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return true
  }
  if (!m) return true
  if (m[2] !== (u.port || (u.protocol === 'https:' ? '443' : '80'))) return false
  const host = u.hostname.replace(/^\[|\]$/g, '')
  return isIP(host) === 0 || host === m[1]
}

/**
 * What to check when nothing answered at `url` (issue #21: a head that is
 * down or a wrong port was a bare ECONNREFUSED), by the error's code; or
 * undefined for other failures.
 */
export const connectHint = (url: string, e: unknown): string | undefined => {
  let origin: string
  try {
    origin = new URL(url).host
  } catch {
    origin = url
  }
  const codes = errorCodes(e)
  // The address refused may be another than the URL's: a redirect (to a mirror) was followed.
  const refused = refusedAddress(e)
  if (codes.includes('ECONNREFUSED') && refused && !mayBeUrlEndpoint(refused, url)) {
    return `nothing is listening at ${refused} (reached from ${origin}, by a redirect): is the server it redirects to running, and is the port right?`
  }
  if (codes.includes('ECONNREFUSED')) return `nothing is listening at ${origin}: is the head node (or mirror) running at ${origin}, and is the port right?`
  if (codes.includes('ENOTFOUND') || codes.includes('EAI_AGAIN')) return `the host name in ${origin} does not resolve: check the spelling and DNS`
  if (codes.some((c) => c === 'EHOSTUNREACH' || c === 'ENETUNREACH' || c === 'EHOSTDOWN' || c === 'ENETDOWN')) return `no route to ${origin}: is that machine up, and this one's network?`
  return undefined
}

/**
 * "URL: why" for a request that failed: the URL once (node-fetch's own
 * "request to URL failed, reason:" dropped), and for a certificate nobody
 * trusted or a server nobody answered for, what to do about it.
 */
export const failedRequestMessage = (url: string, e: unknown): string => {
  const hint = tlsFailureCode(e) ? TLS_HINT : connectHint(url, e)
  return `${url}: ${networkReason(e)}${hint ? ` (${hint})` : ''}`
}

const keepAlive = { keepAlive: true, maxSockets: 16 }
const httpAgent = new http.Agent(keepAlive)
/** One https agent per CA file (read once per process), or for no file. */
const httpsAgents = new Map<string, https.Agent>()

/**
 * The https agent: Node's roots plus the site CA when there is one. The CA
 * file is read at the first call (a bad one is an ECONFIG naming it).
 */
export const httpsAgent = (env: NodeJS.ProcessEnv = process.env): https.Agent => {
  const id = env[SITE_CA_ENV] || SITE_CA_FILE
  let agent = httpsAgents.get(id)
  if (!agent) {
    const site = readSiteCa(env)
    // `ca` replaces Node's default roots: keep them, and add the site's.
    agent = new https.Agent(site ? { ...keepAlive, ca: [...rootCertificates, ...site.certs] } : keepAlive)
    httpsAgents.set(id, agent)
  }
  return agent
}

/** The agent for a request to `u` (node-fetch's `agent` option takes this function). */
export const agentFor = (u: URL): http.Agent => (u.protocol === 'https:' ? httpsAgent() : httpAgent)
