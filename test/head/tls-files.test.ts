/**
 * The head's --tls-cert/--tls-key checked when read (agent/head/server.ts),
 * at start and at reload: a key that is not the certificate's, the two files
 * swapped, or a certificate file with no certificate in it is refused with a
 * ConfigError naming the flag and the file. An empty certificate file used to
 * start a head that announced https and failed every handshake; a wrong or
 * swapped key was an EUNEXPECTED OpenSSL string naming no file.
 */
import t from 'tap'
import { copyFile, writeFile } from 'node:fs/promises'
import { request } from 'node:https'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError } from '../../agent/core/errors.js'
import { silentLogger } from '../../agent/core/log.js'
import { startHead } from '../../agent/head/server.js'
import { gate } from '../helpers/capability.js'
import { makeCa } from '../helpers/pki.js'
import { runCliAsync } from '../helpers/run-cli.js'

const NODES = { schema: 1 as const, defaults: {}, architectures: {}, groups: {}, nodes: {}, images: {} }

const refusal = async (certFile: string, keyFile: string, store: string): Promise<ConfigError> => {
  try {
    const head = await startHead({ store, nodes: NODES, listen: '127.0.0.1:0', tls: { certFile, keyFile } })
    await head.close()
  } catch (e) {
    if (e instanceof ConfigError) return e
    throw e
  }
  throw new Error('the head started')
}

const handshake = (url: string, ca: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const req = request(`${url}/v1/nodes`, { ca: readFileSync(ca) }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })

t.test('a wrong, swapped or empty certificate or key is refused, naming the flag and the file', gate('openssl'), async (t) => {
  const dir = t.testdir()
  const pki = makeCa(dir)
  const store = join(dir, 'store')
  const empty = join(dir, 'empty.pem')
  await writeFile(empty, '')
  const wrong = await refusal(pki.cert, join(dir, 'ca.key'), store)
  t.equal(wrong.key, '--tls-key')
  t.match(wrong.message, /ca\.key.*server\.pem|server\.pem.*ca\.key/, 'names both files')
  const swapped = await refusal(pki.key, pki.cert, store)
  t.equal(swapped.key, '--tls-cert')
  t.match(swapped.message, /server\.key/)
  t.match(swapped.message, /swapped/)
  const noCert = await refusal(empty, pki.key, store)
  t.equal(noCert.key, '--tls-cert')
  t.match(noCert.message, /empty\.pem/)
  const noKey = await refusal(pki.cert, empty, store)
  t.equal(noKey.key, '--tls-key')

  await writeFile(join(dir, 'nodes.json'), JSON.stringify({ schema: 1, nodes: {} }))
  const cli = await runCliAsync(['head', '--store', store, '--nodes', join(dir, 'nodes.json'), '--listen', '127.0.0.1:0', '--tls-cert', pki.cert, '--tls-key', join(dir, 'ca.key')], { timeoutMs: 30_000 })
  t.equal(cli.status, 2, 'a usage error (exit 2), not a crash')
  t.match(cli.stderr, /--tls-key/)
})

t.test('a reload with an empty certificate keeps serving the old one', gate('openssl'), async (t) => {
  const dir = t.testdir()
  const pki = makeCa(dir)
  const cert = join(dir, 'live.pem')
  await copyFile(pki.cert, cert)
  const head = await startHead({ store: join(dir, 'store'), nodes: NODES, listen: '127.0.0.1:0', tls: { certFile: cert, keyFile: pki.key }, log: silentLogger() })
  t.teardown(() => head.close({ abort: true }))
  t.equal(await handshake(head.url, pki.ca), 200)
  await writeFile(cert, '')
  await head.reload()
  t.equal(await handshake(head.url, pki.ca), 200, 'the old certificate still answers')
})
