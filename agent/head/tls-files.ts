/**
 * The head's --tls-cert/--tls-key files (agent/head/server.ts reads them at
 * start and at every reload): read, and the pair checked before it is served.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { ConfigError, messageOf } from '../core/errors.js'

/** The certificate and key of the head's `tls` option (server.ts), read and checked; ConfigError naming the file. */
export const readTls = async (tls: { certFile: string; keyFile: string }): Promise<{ cert: string; key: string }> => {
  const read = async (file: string, flag: string): Promise<string> => {
    try {
      return await readFile(file, 'utf8')
    } catch (e) {
      throw new ConfigError(flag, `cannot read ${file}: ${messageOf(e)}`, { file })
    }
  }
  const cert = await read(tls.certFile, '--tls-cert')
  const key = await read(tls.keyFile, '--tls-key')
  checkTlsPair(tls, cert, key)
  return { cert, key }
}

/**
 * The pair checked before it is served: an empty certificate file used to
 * start a head that failed every handshake, and a wrong or swapped key was an
 * OpenSSL string naming no file.
 */
const checkTlsPair = (tls: { certFile: string; keyFile: string }, cert: string, key: string): void => {
  const looksLikeKey = (text: string): boolean => /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch (e) {
    const swapped = looksLikeKey(cert) && !looksLikeKey(key) ? ': it holds a private key, are --tls-cert and --tls-key swapped?' : ' (a PEM "BEGIN CERTIFICATE" block, the server\'s first)'
    throw new ConfigError('--tls-cert', `${tls.certFile} holds no certificate${swapped} (${messageOf(e)})`, { file: tls.certFile })
  }
  let privateKey
  try {
    privateKey = createPrivateKey(key)
  } catch (e) {
    throw new ConfigError('--tls-key', `${tls.keyFile} holds no usable private key (a PEM "BEGIN PRIVATE KEY" block, not encrypted) (${messageOf(e)})`, { file: tls.keyFile })
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new ConfigError('--tls-key', `${tls.keyFile} is not the private key of the certificate in ${tls.certFile}: give the key the certificate was made with`, { file: tls.keyFile })
  }
}
