import t, { type Test } from 'tap'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { SignatureError } from '../../agent/core/errors.js'
import { parseManifest } from '../../agent/manifest/schema.js'
import { canonicalBytes, serializeManifest } from '../../agent/manifest/serialize.js'
import { generateKeyPair, keyIdOf, signManifest, verifyManifestSignature } from '../../agent/manifest/sign.js'
import type { Manifest } from '../../agent/manifest/types.js'

const manifest = (): Manifest =>
  parseManifest({
    schema: 1,
    name: 'img',
    format: 'raw',
    created: '2026-11-21T12:00:00Z',
    size: 100,
    sha256: 'a'.repeat(64),
    chunking: { algorithm: 'fastcdc-gear-v1', minSize: 64, avgSize: 256, maxSize: 1024 },
    urls: ['http://h/img'],
    chunks: [[0, 100, 'b'.repeat(64)]],
  })

const refusal = (t: Test, fn: () => void, reason: string): void => {
  const err = t.throws(fn) as SignatureError
  t.type(err, SignatureError)
  t.equal(err.code, 'ESIGNATURE')
  t.equal(err.context.reason, reason)
}

t.test('a key pair is PEM ed25519 and keyId is the sha256 of the public key DER', async (t) => {
  const kp = generateKeyPair()
  t.match(kp.publicKeyPem, /^-----BEGIN PUBLIC KEY-----/)
  t.match(kp.privateKeyPem, /^-----BEGIN PRIVATE KEY-----/)
  t.equal(createPublicKey(kp.publicKeyPem).asymmetricKeyType, 'ed25519')
  t.match(keyIdOf(kp.publicKeyPem), /^[0-9a-f]{64}$/)
  t.equal(keyIdOf(kp.privateKeyPem), keyIdOf(kp.publicKeyPem), 'private key gives the same id')
})

t.test('a signed manifest verifies with the matching public key', async (t) => {
  const kp = generateKeyPair()
  const s = signManifest(manifest(), kp.privateKeyPem)
  t.equal(s.signature?.algorithm, 'ed25519')
  t.equal(s.signature?.keyId, keyIdOf(kp.publicKeyPem))
  t.doesNotThrow(() => verifyManifestSignature(s, kp.publicKeyPem))
  t.doesNotThrow(() => verifyManifestSignature(s, createPublicKey(kp.publicKeyPem)), 'KeyObject works too')
  t.same(canonicalBytes(s), canonicalBytes(manifest()), 'the signature is not part of the signed bytes')
})

t.test('an unsigned manifest is refused', async (t) => {
  refusal(t, () => verifyManifestSignature(manifest(), generateKeyPair().publicKeyPem), 'unsigned')
})

t.test('a manifest signed by another key is refused, naming both keys', async (t) => {
  const a = generateKeyPair()
  const b = generateKeyPair()
  const s = signManifest(manifest(), a.privateKeyPem)
  refusal(t, () => verifyManifestSignature(s, b.publicKeyPem), 'other-key')
  t.throws(() => verifyManifestSignature(s, b.publicKeyPem), { message: new RegExp(keyIdOf(a.publicKeyPem)) })
})

t.test('a manifest tampered with after signing is refused', async (t) => {
  const kp = generateKeyPair()
  const s = signManifest(manifest(), kp.privateKeyPem)
  refusal(t, () => verifyManifestSignature({ ...s, sha256: 'c'.repeat(64) }, kp.publicKeyPem), 'bad-signature')
  refusal(t, () => verifyManifestSignature({ ...s, chunks: [{ ...s.chunks[0]!, sha256: 'd'.repeat(64) }] }, kp.publicKeyPem), 'bad-signature')
  refusal(t, () => verifyManifestSignature({ ...s, urls: ['http://evil/img'] }, kp.publicKeyPem), 'bad-signature')
})

t.test('a forged signature that claims the right keyId is refused', async (t) => {
  const kp = generateKeyPair()
  const other = generateKeyPair()
  const forged = signManifest(manifest(), other.privateKeyPem)
  forged.signature = { ...forged.signature!, keyId: keyIdOf(kp.publicKeyPem) }
  refusal(t, () => verifyManifestSignature(forged, kp.publicKeyPem), 'bad-signature')
})

t.test('the signature survives serialisation and parsing', async (t) => {
  const kp = generateKeyPair()
  const text = serializeManifest(signManifest(manifest(), kp.privateKeyPem))
  t.doesNotThrow(() => parseManifest(text, { publicKey: kp.publicKeyPem }))
})

t.test('keys of the wrong kind are configuration errors', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 })
  t.throws(() => verifyManifestSignature(manifest(), rsa.publicKey), { code: 'ECONFIG' })
  t.throws(() => signManifest(manifest(), generateKeyPair().publicKeyPem), { code: 'ECONFIG' })
  t.throws(() => verifyManifestSignature(manifest(), 'not a pem'), { code: 'ECONFIG' })
})
