/**
 * ed25519 manifest signatures through node:crypto (SPEC §4).
 *
 * The signature covers the canonical serialisation of the manifest without
 * its `signature` field (agent/manifest/serialize.ts, docs/manifest.md), so
 * any change to any other field — a chunk digest, a URL, the name — breaks it.
 * `keyId` is the lower-case hex sha256 of the signer's public key in DER
 * (SubjectPublicKeyInfo), so a node can say WHICH key signed a manifest it
 * refuses.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { ConfigError, SignatureError, messageOf } from '../core/errors.js'
import { canonicalBytes } from './serialize.js'
import type { Manifest } from './types.js'

/** A key as callers hold it: a KeyObject or PEM text. */
export type KeyInput = KeyObject | string | Buffer

export interface KeyPairPem {
  /** SPKI PEM (`-----BEGIN PUBLIC KEY-----`). */
  publicKeyPem: string
  /** PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), unencrypted: protect the file (0600). */
  privateKeyPem: string
}

/** A fresh ed25519 key pair, PEM-encoded. */
export const generateKeyPair = (): KeyPairPem => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  }
}

const checkEd25519 = (k: KeyObject, what: string): KeyObject => {
  if (k.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError(what, `must be an ed25519 key, got ${k.asymmetricKeyType ?? k.type}`)
  }
  return k
}

/** Parses a public key (PEM or KeyObject; a private key yields its public half). */
export const toPublicKey = (key: KeyInput): KeyObject => {
  try {
    if (typeof key === 'string' || Buffer.isBuffer(key)) return checkEd25519(createPublicKey(key), 'publicKey')
    return checkEd25519(key.type === 'private' ? createPublicKey(key) : key, 'publicKey')
  } catch (e) {
    if (e instanceof ConfigError) throw e
    throw new ConfigError('publicKey', `not a usable public key: ${messageOf(e)}`, {})
  }
}

/** Parses a private key (PEM or KeyObject). */
export const toPrivateKey = (key: KeyInput): KeyObject => {
  try {
    if (typeof key === 'string' || Buffer.isBuffer(key)) return checkEd25519(createPrivateKey(key), 'privateKey')
    if (key.type !== 'private') throw new ConfigError('privateKey', 'a public key cannot sign')
    return checkEd25519(key, 'privateKey')
  } catch (e) {
    if (e instanceof ConfigError) throw e
    throw new ConfigError('privateKey', `not a usable private key: ${messageOf(e)}`)
  }
}

/** sha256 (hex) of the public key's SPKI DER: the `keyId` in signatures. */
export const keyIdOf = (key: KeyInput): string =>
  createHash('sha256').update(toPublicKey(key).export({ type: 'spki', format: 'der' })).digest('hex')

/** A copy of `m` signed with `privateKey` (any previous signature replaced). */
export const signManifest = (m: Manifest, privateKey: KeyInput): Manifest => {
  const key = toPrivateKey(privateKey)
  const value = sign(null, canonicalBytes(m), key).toString('base64')
  return { ...m, signature: { algorithm: 'ed25519', keyId: keyIdOf(key), value } }
}

/**
 * Throws SignatureError (ESIGNATURE) unless `m` carries a valid ed25519
 * signature by `publicKey` over its canonical form. Distinguishes: unsigned,
 * signed by another key (keyId differs), and bad signature (tampered or forged).
 */
export const verifyManifestSignature = (m: Manifest, publicKey: KeyInput): void => {
  const key = toPublicKey(publicKey)
  const keyId = keyIdOf(key)
  const ctx = { manifest: m.name, sha256: m.sha256, expectedKeyId: keyId }
  const sig = m.signature
  if (!sig) throw new SignatureError(`manifest ${m.name} is not signed, and a public key is configured`, { ...ctx, reason: 'unsigned' })
  if (sig.algorithm !== 'ed25519') {
    throw new SignatureError(`manifest ${m.name} has a ${String(sig.algorithm)} signature; only ed25519 is accepted`, { ...ctx, reason: 'algorithm' })
  }
  if (sig.keyId !== keyId) {
    throw new SignatureError(`manifest ${m.name} is signed by key ${sig.keyId}, not by the configured key ${keyId}`, {
      ...ctx,
      foundKeyId: sig.keyId,
      reason: 'other-key',
    })
  }
  const value = Buffer.from(sig.value, 'base64')
  let ok = false
  try {
    ok = value.length === 64 && verify(null, canonicalBytes(m), key, value)
  } catch {
    ok = false
  }
  if (!ok) {
    throw new SignatureError(`manifest ${m.name} has a bad signature for key ${keyId} (altered after signing, or forged)`, {
      ...ctx,
      reason: 'bad-signature',
    })
  }
}
