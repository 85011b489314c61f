/**
 * The boot stage authenticates to a head that requires it (issue #22,
 * finding 7; docs/security.md): the real stage (cachePipeline, a real
 * squashfs, a real tmpfs root) against the real head (startHead) started
 * with a site token and a nodes file binding node n1 to its own credential.
 * The token comes from a root-only file, as the dracut module leaves it in
 * the initramfs; it is sent on the descriptor, manifest, image and event
 * requests, and appears in no record, spooled event or log line.
 */
import t, { type Test } from 'tap'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseBootCmdline } from '../../agent/boot/cmdline.js'
import { cachePipeline } from '../../agent/boot/pipeline.js'
import { runBootStage } from '../../agent/boot/stage.js'
import { createLogger } from '../../agent/core/log.js'
import { createHash } from 'node:crypto'
import { startHead } from '../../agent/head/server.js'
import { gate } from '../helpers/capability.js'
import { publishBytes, writeNodes } from '../helpers/head-fixtures.js'
import { makeOsTree, mksquashfs, scratch, unmountUnder } from '../helpers/loop.js'

/** What the nodes file holds for a node's token (docs/security.md): its sha256, never the token. */
const tokenSha256 = (token: string): string => createHash('sha256').update(token).digest('hex')
const SITE = 'site-3e1f0a9c7b5d4e2f8a6c0b1d3e5f7a9c'
const TOKEN_N1 = 'n1-4c2a9e7f1b3d5c8a0e6f2b4d9c1a7e3f'

const realGate = gate('root', 'squashfs-tools')

/** A head requiring auth, with image `os` published, and a boot of n1 against it. */
const setup = async (t: Test, opts: { siteOnly?: boolean } = {}) => {
  const s = await scratch(t, 'ba-token-')
  const store = join(s.dir, 'store')
  const img = await mksquashfs(await makeOsTree(join(s.dir, 'tree')), join(s.dir, 'os.sqfs'))
  await publishBytes(store, 'os', await readFile(img), { dir: s.dir })
  const nodes = await writeNodes(join(s.dir, 'nodes.json'), {
    schema: 1,
    defaults: { image: 'os', style: 'rwram' },
    nodes: { n1: opts.siteOnly ? {} : { tokenSha256: tokenSha256(TOKEN_N1) } },
  })
  const head = await startHead({ store, nodes, token: SITE })
  t.teardown(() => head.close({ abort: true }))
  const logPath = join(s.dir, 'stage.log')
  const fd = openSync(logPath, 'w')
  t.teardown(() => closeSync(fd))
  const runDir = join(s.dir, 'run')
  const sysroot = join(s.dir, 'sysroot')
  const boot = async (tokenFile: string) => {
    const out = await runBootStage({
      cmdline: parseBootCmdline(`rd.bootagent.server=${head.url} rd.bootagent.node=n1 rd.bootagent.devtimeout=1 rd.bootagent.rebootdelay=0 rd.bootagent.onfail=emergency`),
      runDir,
      sysroot,
      pipeline: cachePipeline,
      log: createLogger({ fd, level: 'debug' }),
      sleep: async () => {},
      tokenFile,
    })
    await unmountUnder(sysroot)
    await unmountUnder(runDir)
    return out
  }
  const stored = (): Array<{ kind: string }> => {
    try {
      return readFileSync(join(store, 'events', 'n1.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string })
    } catch {
      return []
    }
  }
  return { dir: s.dir, runDir, boot, stored, log: () => readFileSync(logPath, 'utf8') }
}

t.test('a head started with a token serves a booting node whose token file is present; the token is nowhere but in the requests', realGate, async (t) => {
  const env = await setup(t)
  const tokenFile = join(env.dir, 'token')
  await writeFile(tokenFile, `${TOKEN_N1}\n`, { mode: 0o600 })
  const r = await env.boot(tokenFile)
  t.equal(r.exitCode, 0, r.record.error?.message ?? 'booted')
  t.match(r.record, { result: 'ok', node: 'n1', style: 'rwram', cache: { hit: false } })
  t.ok(r.record.bytesFetched > 0, 'the image bytes came from the head, which refuses anonymous requests')
  t.same(env.stored().map((e) => e.kind), ['boot'], 'the boot event was delivered with the token')
  // The daemon's copy, root-only, in the run directory (/run survives switch_root).
  const copy = join(env.runDir, 'token')
  t.equal(((await stat(copy)).mode & 0o777).toString(8), '600')
  t.equal((await readFile(copy, 'utf8')).trim(), TOKEN_N1)
  const record = await readFile(r.recordPath, 'utf8')
  const spool = (await Promise.all((await readdir(r.record.spoolDir, { recursive: true })).map((f) => readFile(join(r.record.spoolDir, f), 'utf8').catch(() => '')))).join('')
  for (const [what, text] of [['boot record', record], ['log', env.log()], ['spool', spool], ['stored events', JSON.stringify(env.stored())]] as const) {
    t.notOk(text.includes(TOKEN_N1), `the token is not in the ${what}`)
  }
})

t.test('without the token file the same boot is refused by the head (401), and a readable token file fails the boot naming the path and the fix', realGate, async (t) => {
  const env = await setup(t)
  const none = await env.boot(join(env.dir, 'absent'))
  t.equal(none.exitCode, 1, 'failed boot, onfail=emergency')
  t.match(none.record.error, { code: 'EHTTP', message: /401/ })
  const tokenFile = join(env.dir, 'token')
  await writeFile(tokenFile, `${TOKEN_N1}\n`, { mode: 0o644 })
  const readable = await env.boot(tokenFile)
  t.equal(readable.exitCode, 2, 'a configuration error')
  t.match(readable.record.error, { code: 'ECONFIG', message: new RegExp(`${tokenFile} is mode 0644.*chmod 600 ${tokenFile}`) })
  t.notOk(JSON.stringify(readable.record).includes(TOKEN_N1))
})

t.test('a token on the kernel command line is refused, without repeating it', async (t) => {
  for (const key of ['rd.bootagent.token', 'rd.bootagent.token-file', 'rd.bootagent.secret', 'rd.bootagent.password']) {
    const e = (() => {
      try {
        parseBootCmdline(`rd.bootagent.server=http://h:8080 ${key}=${TOKEN_N1}`)
        return undefined
      } catch (err) {
        return err as Error & { code?: string; key?: string }
      }
    })()
    t.match(e, { code: 'ECONFIG', key, message: /readable by every user.*\/etc\/boot-agent\/token/ }, key)
    t.notOk(e?.message.includes(TOKEN_N1) || JSON.stringify(e).includes(TOKEN_N1), `${key}: the value is not repeated`)
  }
})

t.test('finding 7 as filed: a head started with only the site-wide --token serves a node whose initramfs carries that token', realGate, async (t) => {
  const env = await setup(t, { siteOnly: true })
  const tokenFile = join(env.dir, 'token')
  await writeFile(tokenFile, `${SITE}\n`, { mode: 0o600 })
  const r = await env.boot(tokenFile)
  t.equal(r.exitCode, 0, r.record.error?.message ?? 'booted')
  t.same(env.stored().map((e) => e.kind), ['boot'])
  t.notOk(env.log().includes(SITE), 'the token is not in the log')
})
