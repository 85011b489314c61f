import t from 'tap'
import { createPrivateKey, createPublicKey } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { keyIdOf } from '../../agent/manifest/sign.js'
import { runCli } from '../helpers/run-cli.js'

t.test('keygen writes a 0600 private key and a public key that belong together', async (t) => {
  const prefix = join(t.testdir(), 'site')
  const r = runCli(['keygen', '--out', prefix, '--json'])
  t.equal(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { privateKey: string; publicKey: string; keyId: string }
  t.equal(out.privateKey, `${prefix}.key`)
  t.equal(statSync(`${prefix}.key`).mode & 0o777, 0o600, 'private key readable by its owner only')
  const priv = createPrivateKey(readFileSync(`${prefix}.key`))
  const pub = createPublicKey(readFileSync(`${prefix}.pub`))
  t.equal(priv.asymmetricKeyType, 'ed25519')
  t.equal(keyIdOf(priv), keyIdOf(pub), 'the pair matches')
  t.equal(out.keyId, keyIdOf(pub))
})

t.test('keygen refuses to overwrite an existing key and leaves it intact', async (t) => {
  const dir = t.testdir()
  const prefix = join(dir, 'site')
  writeFileSync(`${prefix}.pub`, 'precious\n')
  const r = runCli(['keygen', '--out', prefix])
  t.equal(r.status, 2)
  t.match(r.stderr, /site\.pub already exists/)
  t.equal(readFileSync(`${prefix}.pub`, 'utf8'), 'precious\n')
  t.throws(() => statSync(`${prefix}.key`), 'no half pair left behind')
  t.equal(runCli(['keygen', '--out', join(dir, 'other')]).status, 0)
  t.equal(runCli(['keygen', '--out', join(dir, 'other')]).status, 2, 'a second run on the same prefix fails')
})

t.test('keygen without --out is a usage error, and --help answers', async (t) => {
  const r = runCli(['keygen'])
  t.equal(r.status, 2)
  t.match(r.stderr, /--out/)
  const h = runCli(['keygen', '--help'])
  t.equal(h.status, 0)
  t.match(h.stdout, /usage: boot-agent keygen --out PREFIX/)
})
