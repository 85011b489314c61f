/**
 * The operator commands through the real bundled CLI (child processes):
 * fetch, verify, cache ls/gc — exit codes, output, --json, --help.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdir, open, readFile, writeFile } from 'node:fs/promises'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { xxh64Segments } from '../../agent/hash/segments.js'
import { XXH64_SEGMENT_BYTES } from '../../agent/cache/meta.js'
import { Cache } from '../../agent/cache/store.js'
import { serializeManifest } from '../../agent/manifest/serialize.js'
import { generateKeyPair, signManifest } from '../../agent/manifest/sign.js'
import { bundleAgent } from '../helpers/bundle.js'
import { gate } from '../helpers/capability.js'
import { flipByte, manifestFor, sha256Hex, writeImage, writeSparseImage } from '../helpers/image.js'
import { startNginx } from '../helpers/nginx.js'
import { forgeCachedObject } from '../helpers/forge.js'

const KiB = 1024

// One bundle for the whole file, removed at the end.
const bundleDir = mkdtempSync(join(tmpdir(), 'ba-pipeline-cli-'))
t.teardown(() => rmSync(bundleDir, { recursive: true, force: true }))
let agentPath: Promise<string> | undefined
const agent = (_t: Test) => (agentPath ??= bundleAgent(bundleDir))

const cli = async (t: Test, args: string[]) => {
  const a = await agent(t)
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const c = spawn(process.execPath, [a, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '', BOOT_AGENT_LOG_LEVEL: 'warn' } })
    let out = ''
    let err = ''
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    c.on('exit', (code) => resolve({ code, out, err }))
  })
}

const serve = async (t: Test) => {
  const dir = t.testdir({ www: {} })
  const www = join(dir, 'www')
  const ng = await startNginx(www)
  t.teardown(() => ng.stop())
  const data = await writeImage(join(www, 'img.sqfs'), 700 * KiB, 'cli')
  const m = manifestFor(data, [`img.sqfs`])
  // Relative URL in the manifest: resolved against the manifest's own URL.
  await writeFile(join(www, 'img.json'), serializeManifest(m))
  return { dir, www, ng, data, m, cache: join(dir, 'cache'), url: `${ng.url}/img.json` }
}

t.test('every operator command answers --help with its options', async (t) => {
  for (const [cmd, opt] of [['fetch', '--pubkey'], ['verify', '--strong'], ['cache', '--keep']]) {
    const r = await cli(t, [cmd!, '--help'])
    t.equal(r.code, 0)
    t.match(r.out, `usage: boot-agent ${cmd}`)
    t.match(r.out, opt!)
  }
})

t.test('fetch prints the object path and miss, then hit; exit 0 with a verified object', gate('nginx'), async (t) => {
  const s = await serve(t)
  const r1 = await cli(t, ['fetch', s.url, '--cache', s.cache])
  t.equal(r1.code, 0, r1.err)
  const [path, line] = r1.out.trim().split('\n')
  t.equal(sha256Hex(await readFile(path!)), s.m.sha256)
  t.match(line, /^miss: .* downloaded 716800/)
  const r2 = await cli(t, ['fetch', s.url, '--cache', s.cache, '--json', '--strong'])
  t.equal(r2.code, 0)
  const j = JSON.parse(r2.out) as Record<string, unknown>
  t.match(j, { hit: true, sha256: s.m.sha256, path, bytesDownloaded: 0 })
})

t.test('fetch exits non-zero with a clear error for a malformed manifest and for a missing one', gate('nginx'), async (t) => {
  const s = await serve(t)
  await writeFile(join(s.www, 'bad.json'), JSON.stringify({ ...JSON.parse(serializeManifest(s.m)), sha256: 'XYZ' }))
  const r = await cli(t, ['fetch', `${s.ng.url}/bad.json`, '--cache', s.cache])
  t.equal(r.code, 1)
  t.match(r.err, /sha256/)
  const r404 = await cli(t, ['fetch', `${s.ng.url}/nope.json`, '--cache', s.cache])
  t.equal(r404.code, 1)
  t.match(r404.err, /HTTP 404 from http:\/\/127\.0\.0\.1:\d+\/nope\.json/)
  const usage = await cli(t, ['fetch', 'ftp://x/y', '--cache', s.cache])
  t.equal(usage.code, 2)
})

t.test('with --pubkey, an unsigned or wrongly signed manifest is refused and a rightly signed one accepted', gate('nginx'), async (t) => {
  const s = await serve(t)
  const key = generateKeyPair()
  const other = generateKeyPair()
  await writeFile(join(s.dir, 'pub.pem'), key.publicKeyPem)
  await writeFile(join(s.www, 'signed.json'), serializeManifest(signManifest(s.m, key.privateKeyPem)))
  await writeFile(join(s.www, 'other.json'), serializeManifest(signManifest(s.m, other.privateKeyPem)))
  const unsigned = await cli(t, ['fetch', s.url, '--cache', s.cache, '--pubkey', join(s.dir, 'pub.pem')])
  t.equal(unsigned.code, 1)
  t.match(unsigned.err, /sign/i)
  const wrong = await cli(t, ['fetch', `${s.ng.url}/other.json`, '--cache', s.cache, '--pubkey', join(s.dir, 'pub.pem')])
  t.equal(wrong.code, 1)
  t.match(wrong.err, /sign/i)
  const ok = await cli(t, ['fetch', `${s.ng.url}/signed.json`, '--cache', s.cache, '--pubkey', join(s.dir, 'pub.pem')])
  t.equal(ok.code, 0, ok.err)
})

t.test('verify exits non-zero naming a corrupt object and its chunk; cache ls and gc list and prune', gate('nginx'), async (t) => {
  const s = await serve(t)
  const r = await cli(t, ['fetch', s.url, '--cache', s.cache, '--json'])
  const { path } = JSON.parse(r.out) as { path: string }
  const clean = await cli(t, ['verify', '--cache', s.cache])
  t.equal(clean.code, 0)
  t.match(clean.out, `ok       ${s.m.sha256}`)
  const fh = await open(path, 'r+')
  await fh.write(Buffer.from('X'), 0, 1, 1000)
  await fh.close()
  for (const mode of [[], ['--strong']]) {
    const v = await cli(t, ['verify', '--cache', s.cache, ...mode])
    t.equal(v.code, 1, `verify ${mode.join(' ')} fails`)
    t.match(v.out, new RegExp(`CORRUPT  ${s.m.sha256}.*chunks 0`))
  }
  const vj = JSON.parse((await cli(t, ['verify', '--cache', s.cache, '--json'])).out) as { objects: { ok: boolean; badChunks: number[] }[] }
  t.match(vj.objects, [{ ok: false, badChunks: [0] }])
  const ls = JSON.parse((await cli(t, ['cache', 'ls', '--cache', s.cache, '--json'])).out) as { objects: { sha256: string; corruptChunks: number[] }[] }
  t.match(ls.objects, [{ sha256: s.m.sha256, corruptChunks: [0] }])
  // The next fetch repairs it.
  const again = JSON.parse((await cli(t, ['fetch', s.url, '--cache', s.cache, '--json'])).out) as { chunksRepaired: number }
  t.equal(again.chunksRepaired, 1)
  t.equal((await cli(t, ['verify', '--cache', s.cache])).code, 0)
  const gc = await cli(t, ['cache', 'gc', '--cache', s.cache, '--keep', '0', '--json'])
  t.equal(gc.code, 0)
  t.match(JSON.parse(gc.out), { removed: [{ sha256: s.m.sha256 }] })
  t.same((JSON.parse((await cli(t, ['cache', 'ls', '--cache', s.cache, '--json'])).out) as { objects: unknown[] }).objects, [])
})

// A fetch whose manifest never came (head down, 404) created an empty root-only
// cache directory, as if the fetch had got somewhere. A bad --cache is still named
// before any request.
t.test('fetch that fails before the manifest leaves no cache behind; a bad --cache is refused first', gate('nginx'), async (t) => {
  const s = await serve(t)
  const refused = await cli(t, ['fetch', 'http://127.0.0.1:1/img.json', '--cache', s.cache])
  t.equal(refused.code, 1)
  t.match(refused.err, /ECONNREFUSED|nothing is listening/)
  t.notOk(existsSync(s.cache), 'connection refused: no cache directory made')
  const r404 = await cli(t, ['fetch', `${s.ng.url}/nope.json`, '--cache', s.cache])
  t.equal(r404.code, 1)
  t.notOk(existsSync(s.cache), 'HTTP 404: no cache directory made')
  const foreign = join(s.dir, 'foreign')
  await mkdir(foreign)
  await writeFile(join(foreign, 'notes.txt'), 'not a cache')
  const bad = await cli(t, ['fetch', 'http://127.0.0.1:1/img.json', '--cache', foreign])
  t.equal(bad.code, 1)
  t.match(bad.err, foreign, 'the --cache refusal, not the network error')
  t.notMatch(bad.err, /ECONNREFUSED/)
  const ok = await cli(t, ['fetch', s.url, '--cache', s.cache])
  t.equal(ok.code, 0, ok.err)
  t.ok(existsSync(s.cache), 'a fetch that has its manifest makes the cache')
})

t.test('verify, cache ls and cache gc on a path with no cache: an error naming it, nothing created', async (t) => {
  const missing = join(t.testdir(), 'no-such-cache')
  for (const args of [['verify'], ['verify', '--strong'], ['cache', 'ls'], ['cache', 'gc']]) {
    const r = await cli(t, [...args, '--cache', missing])
    t.equal(r.code, 1, `${args.join(' ')} fails`)
    t.equal(r.out, '', 'no "0 ok" that could pass for a verified cache')
    t.match(r.err, `no cache at ${missing}: no such directory`)
    t.notOk(existsSync(missing), 'the mistyped path was not made into an empty cache')
  }
  // An existing empty directory (a fresh cache partition) is a cache with nothing in it.
  const empty = join(t.testdir(), 'empty')
  await mkdir(empty)
  const v = await cli(t, ['verify', '--cache', empty])
  t.equal(v.code, 0, v.err)
  t.match(v.out, '0 ok, 0 corrupt, 0 problem(s)')
})

t.test('fetch refuses 16 kinds of malformed manifest, each with an error naming the field and a non-zero exit', gate('nginx'), async (t) => {
  const s = await serve(t)
  const good = JSON.parse(serializeManifest(s.m)) as Record<string, unknown> & { chunks: [number, number, string][] }
  const c0 = good.chunks[0]!
  const variants: [string, unknown, RegExp][] = [
    ['not JSON', '{"schema":1,', /JSON/],
    ['an array', [], /\$/],
    ['unknown schema', { ...good, schema: 2 }, /schema/],
    ['missing sha256', { ...good, sha256: undefined }, /sha256/],
    ['upper-case hex', { ...good, sha256: s.m.sha256.toUpperCase() }, /sha256/],
    ['negative size', { ...good, size: -1 }, /size/],
    ['absurd size', { ...good, size: 2 ** 60 }, /size/],
    ['chunks that do not add up', { ...good, size: s.m.size + 1 }, /chunks|size/],
    ['overlapping chunks', { ...good, chunks: [c0, [c0[0] + 1, c0[1], c0[2]], ...good.chunks.slice(1)] }, /chunks/],
    ['a gap between chunks', { ...good, chunks: [c0, ...good.chunks.slice(2)] }, /chunks/],
    ['bad chunk hex', { ...good, chunks: [[c0[0], c0[1], 'zz'], ...good.chunks.slice(1)] }, /chunks/],
    ['no chunks', { ...good, chunks: [] }, /chunks/],
    ['a non-http URL', { ...good, urls: ['file:///etc/passwd'] }, /urls/],
    ['urls not a list', { ...good, urls: 'http://x/y' }, /urls/],
    ['unknown chunking algorithm', { ...good, chunking: { ...(good.chunking as object), algorithm: 'rot13' } }, /chunking/],
    ['a bad name', { ...good, name: '../../etc' }, /name/],
  ]
  t.ok(variants.length >= 15)
  for (const [what, body, field] of variants) {
    const file = `bad-${variants.findIndex((v) => v[0] === what)}.json`
    await writeFile(join(s.www, file), typeof body === 'string' ? body : JSON.stringify(body))
    const r = await cli(t, ['fetch', `${s.ng.url}/${file}`, '--cache', s.cache])
    t.equal(r.code, 1, `${what}: exit 1`)
    t.match(r.err, /manifest field|JSON/, `${what}: a manifest error`)
    t.match(r.err.split('\n').find((l) => l.startsWith('boot-agent fetch:')) ?? '', field, `${what}: names the field`)
  }
  t.same((await readdirSafe(join(s.cache, 'objects', 'sha256'))), [], 'nothing fetched')
})

const readdirSafe = async (p: string) => (await import('node:fs/promises')).readdir(p).catch(() => [] as string[])

t.test('an object forged with its metadata recomputed: fetch repairs it from the manifest; verify says what it checked against and catches it with --manifest', gate('nginx'), async (t) => {
  const s = await serve(t)
  // The manifest as `boot-agent manifest` writes it (with xxh64Segments), next to the image.
  const mf = join(s.dir, 'img.json')
  const built = await cli(t, ['manifest', join(s.www, 'img.sqfs'), '--name', 'img', '--url', 'img.sqfs', '--out', mf, '--json'])
  t.equal(built.code, 0, built.err)
  t.match(JSON.parse(built.out), { sha256: s.m.sha256, xxh64Segments: 1 })
  await writeFile(join(s.www, 'img.json'), await readFile(mf))
  const first = JSON.parse((await cli(t, ['fetch', s.url, '--cache', s.cache, '--json'])).out) as { path: string; verifiedBy: string }
  t.equal(first.verifiedBy, 'download')
  const hit = JSON.parse((await cli(t, ['fetch', s.url, '--cache', s.cache, '--json'])).out) as Record<string, unknown>
  t.match(hit, { hit: true, verifiedBy: 'manifest-xxh64', bytesDownloaded: 0 }, 'a normal hit: the manifest\'s segments, nothing downloaded')
  const clean = await cli(t, ['verify', '--cache', s.cache])
  t.match(clean.out, `ok       ${s.m.sha256}  (against local metadata only: corruption, not tampering)`, 'without a manifest it says what it checked against')

  await forgeCachedObject(first.path, { at: 300 * KiB })
  for (const mode of [[], ['--strong']]) {
    const local = await cli(t, ['verify', '--cache', s.cache, ...mode])
    t.equal(local.code, 0, `verify ${mode.join(' ')} against the forged metadata cannot tell (and says it only checked that)`)
    t.match(local.out, /against local metadata only/)
    const v = await cli(t, ['verify', '--cache', s.cache, '--manifest', mf, ...mode])
    t.equal(v.code, 1, `verify ${mode.join(' ')} --manifest FILE catches it`)
    t.match(v.out, new RegExp(`CORRUPT  ${s.m.sha256}.*chunk\\(s\\) differ.*\\(against the manifest\\)`))
  }
  const byUrl = await cli(t, ['verify', '--cache', s.cache, '--manifest', s.url, '--json'])
  t.match(JSON.parse(byUrl.out), { objects: [{ sha256: s.m.sha256, ok: false, against: 'manifest' }] }, '--manifest URL: fetched')
  const r = JSON.parse((await cli(t, ['fetch', s.url, '--cache', s.cache, '--json'])).out) as Record<string, unknown>
  t.match(r, { hit: false, verifiedBy: 'download' }, 'fetch (default, fast) does not take it as a hit')
  t.ok((r.chunksRepaired as number) >= 1, `the forged chunk(s) re-fetched (${String(r.chunksRepaired)})`)
  t.equal(sha256Hex(await readFile(first.path)), s.m.sha256, 'the object is the published image again')
  t.equal((await cli(t, ['verify', '--cache', s.cache, '--manifest', mf])).code, 0)
})

t.test('verify hashes several objects, a multi-segment one among them, and reports one with old (schema 1) metadata', async (t) => {
  const dir = t.testdir()
  const cacheDir = join(dir, 'cache')
  const cache = await Cache.open(cacheDir)
  const publish = async (size: number, seed: string) => {
    const from = join(cache.tmpDir, `${seed}.part`)
    await writeSparseImage(from, size, XXH64_SEGMENT_BYTES, seed)
    const data = await readFile(from)
    const chunks = []
    for (let off = 0, i = 0; off < size; off += 3 * 1024 * 1024 + 7, i++) {
      const part = data.subarray(off, Math.min(size, off + 3 * 1024 * 1024 + 7))
      chunks.push({ index: i, offset: off, size: part.length, sha256: sha256Hex(part) })
    }
    const sha = sha256Hex(data)
    const { xxh64 } = await xxh64Segments(from)
    return { sha, chunks, path: await cache.publish({ from, sha256: sha, computedSha256: sha, size, xxh64, chunks }) }
  }
  const big = await publish(2 * XXH64_SEGMENT_BYTES + 1, 'cli-big')
  const small = await publish(5 * 1024 * 1024, 'cli-small')
  const old = await publish(1024 * 1024, 'cli-old')
  const meta = JSON.parse(await readFile(old.path + '.meta.json', 'utf8'))
  await writeFile(old.path + '.meta.json', JSON.stringify({ ...meta, schema: 1, xxh64: meta.xxh64[0] }))
  const v = await cli(t, ['verify', '--cache', cacheDir, '--json'])
  t.equal(v.code, 1, 'exit 1: the old metadata is a problem')
  const j = JSON.parse(v.out) as { objects: { sha256: string; ok: boolean }[]; problems: { path: string; problem: string }[] }
  t.same(j.objects.map((o) => [o.sha256, o.ok]).sort(), [[big.sha, true], [small.sha, true]].sort(), 'the two current objects verify')
  t.ok(j.problems.some((p) => p.path === old.path && /malformed metadata/.test(p.problem)), 'the schema-1 object is reported, not verified')
  // A byte flipped in the big object's second segment: named with its chunk.
  const at = XXH64_SEGMENT_BYTES + 12345
  await flipByte(big.path, at)
  const bad = big.chunks.find((c) => c.offset <= at && at < c.offset + c.size)!
  const v2 = await cli(t, ['verify', '--cache', cacheDir])
  t.match(v2.out, new RegExp(`CORRUPT  ${big.sha}.*segment\\(s\\) differs \\(1\\).*\\(chunks ${bad.index}\\)`))
  t.match(v2.out, `ok       ${small.sha}`)
})
