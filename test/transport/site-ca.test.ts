/**
 * https with a site CA (agent/transport/trust.ts): a real nginx on loopback
 * speaking TLS with a certificate for 127.0.0.1 signed by a CA made here with
 * the openssl CLI. Without the CA the agent refuses the server at once (a
 * certificate is never retried) and says what to do; with BOOT_AGENT_CA the
 * boot descriptor and the image are fetched and verified over https; a bad
 * CA file is refused naming it.
 */
import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fetchDescriptor } from '../../agent/boot/descriptor.js'
import { readSiteCa, SITE_CA_ENV, SITE_CA_FILE } from '../../agent/transport/trust.js'
import { gate } from '../helpers/capability.js'
import { sha256Hex, writeImage } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'
import { makeCa } from '../helpers/pki.js'
import { runCli } from '../helpers/run-cli.js'
import { publishStatic } from '../helpers/static-head.js'

const NODE = 'n0001'

/** An https head node (static files) with one published image. */
const serveHttps = async (t: Test) => {
  const dir = t.testdir({ www: {}, pki: {} })
  const pki = makeCa(join(dir, 'pki'))
  const ng = await startNginx(join(dir, 'www'), { tls: { cert: pki.cert, key: pki.key } })
  t.teardown(() => ng.stop())
  const image = join(dir, 'image.sqfs')
  const data = await writeImage(image, 600 * 1024, 'site-ca')
  const pub = await publishStatic({ root: join(dir, 'www'), server: ng.url, node: NODE, image, name: 'CPE-base' })
  return { dir, pki, ng, data, pub, cache: join(dir, 'cache'), manifestUrl: `${ng.url}/v1/images/by-digest/${pub.sha256}/manifest` }
}

// Nothing from this machine's environment decides whom the agent trusts here.
const noSiteCa = { [SITE_CA_ENV]: undefined, NODE_EXTRA_CA_CERTS: undefined }

t.test('an https origin whose CA the agent was not given: refused at once, saying what to do; nothing cached', gate('nginx', 'openssl'), async (t) => {
  const s = await serveHttps(t)
  const r = runCli(['fetch', s.manifestUrl, '--cache', s.cache], { env: noSiteCa })
  t.equal(r.status, 1, r.stderr)
  t.match(r.stderr, `boot-agent fetch: ${s.manifestUrl}: unable to verify the first certificate (`, 'the URL, then why, said once')
  t.match(r.stderr, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify the first certificate/)
  t.match(r.stderr, /BOOT_AGENT_CA=FILE/, 'the error says how to give the agent the CA')
  t.same((await s.ng.access()).length, 0, 'no HTTP request got through')
  t.same(await readdir(join(s.cache, 'objects', 'sha256')).catch(() => []), [], 'nothing cached')

  // The boot descriptor likewise, and without a single retry.
  const waits: number[] = []
  const saved = process.env[SITE_CA_ENV]
  delete process.env[SITE_CA_ENV]
  t.teardown(() => {
    if (saved !== undefined) process.env[SITE_CA_ENV] = saved
  })
  const err = await fetchDescriptor(s.ng.url, NODE, { timeoutMs: 5000, attempts: 5, sleep: async (ms) => void waits.push(ms) }).catch((e: unknown) => e)
  t.match(err, { code: /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)$/, message: /BOOT_AGENT_CA/ })
  t.same(waits, [], 'a certificate failure is not retried')
})

t.test('with BOOT_AGENT_CA naming the site CA: descriptor and image over https, verified', gate('nginx', 'openssl'), async (t) => {
  const s = await serveHttps(t)
  const r = runCli(['fetch', s.manifestUrl, '--cache', s.cache, '--json'], { env: { ...noSiteCa, [SITE_CA_ENV]: s.pki.ca } })
  t.equal(r.status, 0, r.stderr)
  const j = JSON.parse(r.stdout) as { path: string; sha256: string; hit: boolean; bytesDownloaded: number }
  t.match(j, { sha256: s.pub.sha256, hit: false, bytesDownloaded: s.data.length })
  t.equal(sha256Hex(await readFile(j.path)), sha256Hex(s.data), 'the cached object is the served image')
  t.ok((await s.ng.access()).some((a) => a.path === s.pub.imageUrlPath && a.status >= 200 && a.status < 300), 'image bytes came over https from nginx')

  const saved = process.env[SITE_CA_ENV]
  process.env[SITE_CA_ENV] = s.pki.ca
  t.teardown(() => {
    if (saved === undefined) delete process.env[SITE_CA_ENV]
    else process.env[SITE_CA_ENV] = saved
  })
  const d = await fetchDescriptor(s.ng.url, NODE, { timeoutMs: 5000 })
  t.match(d, { node: NODE, image: { sha256: s.pub.sha256 } })
})

t.test('a site CA file that is missing, not PEM or not a certificate is refused, naming it', async (t) => {
  const dir = t.testdir({ 'notes.txt': 'this is not a certificate\n', 'broken.pem': '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' })
  const missing = join(dir, 'nope.pem')
  t.throws(() => readSiteCa({ [SITE_CA_ENV]: missing }), { code: 'ECONFIG', message: new RegExp(`${SITE_CA_ENV}: cannot read the CA file ${missing}`) })
  t.throws(() => readSiteCa({ [SITE_CA_ENV]: join(dir, 'notes.txt') }), { code: 'ECONFIG', message: /notes\.txt holds no PEM certificate/ })
  t.throws(() => readSiteCa({ [SITE_CA_ENV]: join(dir, 'broken.pem') }), { code: 'ECONFIG', message: /certificate 1 of 1 in .*broken\.pem is not usable/ })

  // Through the CLI: refused before any byte is fetched (exit 2: the configuration is wrong), naming the file.
  const r = runCli(['fetch', 'https://127.0.0.1:9/m.json', '--cache', join(dir, 'cache')], { env: { ...noSiteCa, [SITE_CA_ENV]: join(dir, 'notes.txt') } })
  t.equal(r.status, 2, r.stderr)
  t.match(r.stderr, /BOOT_AGENT_CA: .*notes\.txt holds no PEM certificate/)
})

t.test('a valid CA file parses into its certificates', gate('openssl'), async (t) => {
  const dir = t.testdir({})
  const pki = makeCa(dir)
  const two = join(dir, 'two.pem')
  await writeFile(two, (await readFile(pki.ca, 'utf8')) + (await readFile(pki.cert, 'utf8')))
  t.match(readSiteCa({ [SITE_CA_ENV]: two }), { file: two, certs: [/BEGIN CERTIFICATE/, /BEGIN CERTIFICATE/] })
  if (!existsSync(SITE_CA_FILE)) t.equal(readSiteCa({}), undefined, `no variable and nothing at ${SITE_CA_FILE}: no site CA, Node's roots only`)
})
