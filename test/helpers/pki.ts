/**
 * A site CA and a server certificate for IP 127.0.0.1 signed by it, made
 * with the real openssl CLI: what a site gives its head node or mirrors,
 * and the agent trusts through BOOT_AGENT_CA (agent/transport/trust.ts).
 */
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

/** A CA, and a server certificate for IP 127.0.0.1 signed by it, in `dir`. */
export const makeCa = (dir: string): { ca: string; cert: string; key: string } => {
  const p = (f: string) => join(dir, f)
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=boot-agent test site CA')
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1')
  execFileSync('sh', ['-c', 'printf "subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n" > server.ext'], { cwd: dir })
  ssl('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('server.pem'), '-days', '2', '-extfile', p('server.ext'))
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key') }
}
