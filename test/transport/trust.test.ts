/**
 * What agent/transport/trust.ts decides beyond reading the CA file
 * (test/transport/site-ca.test.ts covers that, and https through nginx):
 * which agent a request gets, that the site CA is added to Node's roots
 * rather than replacing them, and what a refused certificate's message says.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'
import { agentFor, failedRequestMessage, httpsAgent, SITE_CA_ENV, SITE_CA_FILE } from '../../agent/transport/trust.js'
import { gate } from '../helpers/capability.js'

/** A self-signed certificate for IP 127.0.0.1 (its own CA, which trust.ts accepts as a site CA). */
const selfSigned = (dir: string): { cert: string; key: string } => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  return { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }
}

/** An https server on loopback answering "ok", closed at the end of the test. */
const httpsServer = async (t: Test, pki: { cert: string; key: string }): Promise<string> => {
  const server = https.createServer({ cert: readFileSync(pki.cert), key: readFileSync(pki.key) }, (_req, res) => res.end('ok'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}/`
}

const get = (url: string, agent: https.Agent): Promise<string> =>
  new Promise((resolve, reject) => {
    https.get(url, { agent }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve(body))
    }).on('error', reject)
  })

t.test('plain http gets the shared keep-alive http agent; https the https agent', async (t) => {
  const a = agentFor(new URL('http://h/x'))
  t.ok(a instanceof http.Agent && !(a instanceof https.Agent))
  t.equal(agentFor(new URL('http://other/y')), a, 'one agent for every http request (connections reused)')
  t.equal((a as http.Agent & { options: http.AgentOptions }).options.keepAlive, true)
})

t.test('one https agent per CA file, made once; the site CA is added to Node\'s roots, not put in their place', gate('openssl'), async (t) => {
  const dir = t.testdir()
  const pki = selfSigned(dir)
  const env = { [SITE_CA_ENV]: pki.cert }
  const agent = httpsAgent(env)
  t.equal(httpsAgent(env), agent, 'the same agent again: the file is read once')
  const ca = agent.options.ca as string[]
  t.equal(ca.length, rootCertificates.length + 1)
  t.ok(rootCertificates.every((r) => ca.includes(r)), 'every public root still trusted')
  t.equal(ca.at(-1), readFileSync(pki.cert, 'utf8').trim())
})

t.test('an https server signed by the site CA is reached; the agent for no site CA refuses it, and the message says what to do', gate('openssl'), async (t) => {
  const dir = t.testdir()
  const pki = selfSigned(dir)
  const url = await httpsServer(t, pki)
  t.equal(await get(url, httpsAgent({ [SITE_CA_ENV]: pki.cert })), 'ok')
  if (existsSync(SITE_CA_FILE)) {
    t.comment(`${SITE_CA_FILE} exists on this machine: the no-site-CA case is not checked`)
    return
  }
  const refused = await get(url, httpsAgent({})).then(() => undefined, (e: unknown) => e)
  t.ok(refused, 'refused without the site CA')
  const msg = failedRequestMessage(url, refused)
  t.match(msg, new RegExp(`^${url.replace(/[.]/g, '\\.')}: `))
  t.match(msg, new RegExp(`${SITE_CA_ENV}=FILE`), 'says how to give the agent the CA')
})

t.test('a failure that is not about a certificate carries no CA hint, and node-fetch\'s prefix is dropped', async (t) => {
  const e = Object.assign(new Error('request to http://h:9/x failed, reason: connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' })
  // A refused connection says what to check instead (issue #21), never the CA.
  t.equal(failedRequestMessage('http://h:9/x', e), 'http://h:9/x: connect ECONNREFUSED 127.0.0.1:9 (nothing is listening at h:9: is the head node (or mirror) running at h:9, and is the port right?)')
  t.notMatch(failedRequestMessage('http://h:9/x', e), /BOOT_AGENT_CA/)
  const other = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })
  t.equal(failedRequestMessage('http://h/x', other), 'http://h/x: socket hang up', 'no hint where none applies')
})
