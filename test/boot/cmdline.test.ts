import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MAX_CMDLINE_FILE_BYTES, parseBootCmdline, readBootCmdline, readCmdlineText, splitCmdline } from '../../agent/boot/cmdline.js'
import { ConfigError } from '../../agent/core/errors.js'

const keyOf = (fn: () => unknown): string | undefined => {
  try {
    fn()
  } catch (e) {
    return e instanceof ConfigError ? e.key : `not a ConfigError: ${String(e)}`
  }
  return undefined
}

t.test('the command line splits like the kernel: whitespace separates, quotes group and go', async (t) => {
  t.same(splitCmdline(' a=1  b="x y" \'c=d e\' f=""\n g'), ['a=1', 'b=x y', 'c=d e', 'f=', 'g'])
})

t.test('every documented key parses into its typed value', async (t) => {
  const cfg = parseBootCmdline(
    'root=bootagent rd.bootagent.server=http://10.0.0.1:8080/ rd.bootagent.node=n-01 rd.bootagent.style=disked ' +
      'rd.bootagent.cache=LABEL=cwcache rd.bootagent.root=/dev/nvme0n1p4 rd.bootagent.verify=strong ' +
      'rd.bootagent.pubkey=/etc/boot-agent/key.pem rd.bootagent.onfail=reboot rd.bootagent.format=cache,root ' +
      'rd.bootagent.cachefull=clear-reboot rd.bootagent.ramstyle=roram rd.bootagent.devtimeout=2.5 rd.bootagent.timeout=5 rd.bootagent.rebootdelay=0',
  )
  t.same(cfg, {
    server: 'http://10.0.0.1:8080',
    node: 'n-01',
    style: 'disked',
    cache: { kind: 'label', value: 'cwcache', text: 'LABEL=cwcache' },
    root: { kind: 'path', value: '/dev/nvme0n1p4', text: '/dev/nvme0n1p4' },
    verify: 'strong',
    pubkey: '/etc/boot-agent/key.pem',
    onfail: 'reboot',
    format: { cache: true, root: true },
    cacheFull: 'clear-reboot',
    ramStyle: 'roram',
    deviceTimeoutMs: 2500,
    httpTimeoutMs: 5000,
    rebootDelayMs: 0,
  })
})

t.test('the last occurrence of a key wins', async (t) => {
  t.equal(parseBootCmdline('rd.bootagent.style=rwram rd.bootagent.style=roram').style, 'roram')
  // only the winning value is validated: an overridden bad value does not fail the boot
  t.equal(parseBootCmdline('rd.bootagent.style=bogus rd.bootagent.style=disked').style, 'disked')
})

t.test('cache=none and root=none say explicitly that there is no such partition', async (t) => {
  const cfg = parseBootCmdline('rd.bootagent.cache=none rd.bootagent.root=none')
  t.equal(cfg.cache, null)
  t.equal(cfg.root, null)
})

t.test('an unknown rd.bootagent key is warned about once, other keys are ignored', async (t) => {
  const warned: string[] = []
  const cfg = parseBootCmdline('quiet rd.bootagent.sever=x rd.bootagent.sever=y rd.bootagent.style=rwram rd.lvm=0', {
    warn: (k) => warned.push(k),
  })
  t.same(warned, ['rd.bootagent.sever'])
  t.equal(cfg.style, 'rwram')
})

t.test('a bad value is a ConfigError naming the key', async (t) => {
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.style=diskless')), 'rd.bootagent.style')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.server=ftp://x/')), 'rd.bootagent.server')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.server=not-a-url')), 'rd.bootagent.server')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.server=http://u:p@h/')), 'rd.bootagent.server')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.cache=sda1')), 'rd.bootagent.cache')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.root=LABEL=')), 'rd.bootagent.root')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.root=UUID=not-hex!')), 'rd.bootagent.root')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.root=/dev/../etc/passwd')), 'rd.bootagent.root')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.verify=slow')), 'rd.bootagent.verify')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.onfail=panic')), 'rd.bootagent.onfail')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.format=all')), 'rd.bootagent.format')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.cachefull=never')), 'rd.bootagent.cachefull')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.devtimeout=-1')), 'rd.bootagent.devtimeout')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.node=../x')), 'rd.bootagent.node')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.pubkey=key.pem')), 'rd.bootagent.pubkey')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.server')), 'rd.bootagent.server')
})

t.test('sources are read in dracut order and the later one wins', async (t) => {
  const dir = t.testdir({
    'cmdline.d': {
      '10-a.conf': '# a comment rd.bootagent.style=roram\nrd.bootagent.style=rwram rd.bootagent.verify=strong\n',
      '20-b.conf': 'rd.bootagent.node=from-conf',
      'ignored.txt': 'rd.bootagent.node=never',
    },
    cmdline: 'rd.bootagent.node=from-etc',
    proc: 'BOOT_IMAGE=/vmlinuz rd.bootagent.style=disked\n',
  })
  const src = { etcCmdlineDir: join(dir, 'cmdline.d'), etcCmdline: join(dir, 'cmdline'), procCmdline: join(dir, 'proc') }
  const cfg = await readBootCmdline(src)
  t.equal(cfg.style, 'disked', '/proc/cmdline wins over /etc/cmdline.d')
  t.equal(cfg.node, 'from-etc', '/etc/cmdline wins over /etc/cmdline.d')
  t.equal(cfg.verify, 'strong')
  t.notMatch(await readCmdlineText(src), /never|roram/)
})

t.test('missing sources are empty; --cmdline-file replaces all of them', async (t) => {
  const dir = t.testdir({ only: 'rd.bootagent.style=roram' })
  t.same(await readBootCmdline({ etcCmdlineDir: join(dir, 'no'), etcCmdline: join(dir, 'no2'), procCmdline: join(dir, 'no3') }), {})
  const cfg = await readBootCmdline({ file: join(dir, 'only'), procCmdline: join(dir, 'no3') })
  t.equal(cfg.style, 'roram')
  await mkdir(join(dir, 'd'))
  await writeFile(join(dir, 'd', 'x'), '')
  await t.rejects(readBootCmdline({ file: join(dir, 'absent') }), { code: 'ECONFIG', key: '--cmdline-file' })
})

// `--cmdline-file /dev/zero` read 512 MB into memory and failed 1.3 s later with
// "Invalid string length"; a FIFO with no writer would wait forever. Now: a regular
// file of at most MAX_CMDLINE_FILE_BYTES, or a ConfigError naming the file and why.
t.test('--cmdline-file: a device, a FIFO, a directory or a huge file is refused at once, naming it', async (t) => {
  const dir = t.testdir({ big: 'rd.bootagent.style=roram '.repeat(MAX_CMDLINE_FILE_BYTES / 8), fits: 'a'.repeat(MAX_CMDLINE_FILE_BYTES - 1) + ' ', sub: {} })
  const started = Date.now()
  await t.rejects(readBootCmdline({ file: '/dev/zero' }), { code: 'ECONFIG', key: '--cmdline-file', message: /\/dev\/zero is a character device; give a regular file/ })
  t.ok(Date.now() - started < 500, 'refused without reading the device')
  await t.rejects(readBootCmdline({ file: join(dir, 'big') }), { code: 'ECONFIG', key: '--cmdline-file', message: new RegExp(`big is larger than ${MAX_CMDLINE_FILE_BYTES} bytes`) })
  await t.rejects(readBootCmdline({ file: join(dir, 'sub') }), { code: 'ECONFIG', message: /is a directory/ })
  execFileSync('mkfifo', [join(dir, 'fifo')])
  await t.rejects(readBootCmdline({ file: join(dir, 'fifo') }), { code: 'ECONFIG', message: /fifo is a FIFO/ }, 'no writer, no wait')
  t.equal((await readCmdlineText({ file: join(dir, 'fits') })).length, MAX_CMDLINE_FILE_BYTES, 'exactly the ceiling is read whole')
})

// timeout=0 (or 0.0001, rounded to 0 ms) made every descriptor and manifest request
// time out at once: a boot failing after its retries with "no answer within 0 ms",
// naming no key. devtimeout=0 (do not wait for devices) and rebootdelay=0 stay valid.
t.test('rd.bootagent.timeout must give a request some time', async (t) => {
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.timeout=0')), 'rd.bootagent.timeout')
  t.equal(keyOf(() => parseBootCmdline('rd.bootagent.timeout=0.0001')), 'rd.bootagent.timeout')
  t.equal(parseBootCmdline('rd.bootagent.timeout=0.5').httpTimeoutMs, 500)
  t.equal(parseBootCmdline('rd.bootagent.devtimeout=0').deviceTimeoutMs, 0)
  t.equal(parseBootCmdline('rd.bootagent.rebootdelay=0').rebootDelayMs, 0)
})
