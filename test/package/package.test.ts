/**
 * `npm run package` (scripts/package-deb.sh) and the EL9 spec
 * (scripts/package-rpm.sh): the real dpkg-deb, lintian and rpmbuild. What the
 * .deb holds is what a node installs, so it is checked file by file, its own
 * node runs its own bundle, its man pages render, and lintian finds no error.
 * (Installing it into a Debian tree and booting from it is the VM scenarios'
 * part: test/vm.) The .deb and lintian's verdict are cached by content outside
 * the clone (~/.cache/boot-agent/package): compressing the 86 MB runtime takes
 * minutes on a loaded machine.
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { gate } from '../helpers/capability.js'
import { ROOT, runCli } from '../helpers/run-cli.js'

const CACHE = process.env.BOOT_AGENT_PKG_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'boot-agent', 'package')
const sh = (cmd: string, args: string[], opts: { cwd?: string } = {}): string =>
  execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] })

const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version

t.test('npm run package builds a .deb with the bundle, its runtime, the dracut module, the unit, man pages and docs', gate('dpkg-deb', 'man'), async (t) => {
  runCli(['--help']) // the bundle, when this file runs alone
  const out = t.testdir()
  const printed = sh('bash', ['scripts/package-deb.sh', '--no-bundle', '--out', out]).trim().split('\n').pop()!
  const arch = sh('dpkg', ['--print-architecture']).trim()
  const deb = join(out, `boot-agent_${version}-1_${arch}.deb`)
  t.equal(printed, deb, 'the path is printed last')
  t.ok(existsSync(deb))

  const field = (name: string): string => sh('dpkg-deb', ['-f', deb, name]).trim()
  t.equal(field('Package'), 'boot-agent')
  t.equal(field('Version'), `${version}-1`)
  t.equal(field('Architecture'), arch)
  t.match(field('Depends'), /libc6 \(>= [\d.]+\).*libstdc\+\+6.*squashfs-tools/, "the runtime's libraries (dpkg-shlibdeps) and the tools the agent runs")
  t.notMatch(field('Depends'), /nodejs/, 'no Depends on a nodejs Debian 12 cannot meet')

  const files = sh('dpkg-deb', ['-c', deb]).split('\n').map((l) => l.split(/\s+/).slice(5).join(' ').replace(/^\.\//, '/').replace(/ -> .*$/, ''))
  for (const f of [
    '/usr/bin/boot-agent', '/usr/lib/boot-agent/boot-agent.mjs', '/usr/lib/boot-agent/node',
    '/usr/lib/dracut/modules.d/50boot-agent/module-setup.sh', '/usr/lib/dracut/modules.d/50boot-agent/parse-boot-agent.sh',
    '/usr/lib/dracut/modules.d/50boot-agent/boot-agent-root.sh', '/usr/lib/dracut/modules.d/50boot-agent/boot-agent-initrd.service',
    '/usr/lib/systemd/system/boot-agent.service', '/usr/share/man/man8/boot-agent.8.gz', '/usr/share/man/man7/boot-agent-cmdline.7.gz',
    '/usr/share/doc/boot-agent/copyright', '/usr/share/doc/boot-agent/changelog.Debian.gz',
    '/usr/lib/dracut/dracut.conf.d/50-boot-agent.conf',
  ]) t.ok(files.includes(f), f)
  const chunks = readFileSync(join(ROOT, 'dist', 'boot-agent.mjs'), 'utf8').match(/\.\/chunks\/[\w-]+\.mjs/g) ?? []
  t.ok(chunks.length > 0 && chunks.every((c) => files.includes(`/usr/lib/boot-agent/${c.slice(2)}`)), 'every chunk the entry imports')

  // The package's own node runs the package's own bundle (the wrapper names /usr/lib/boot-agent/node).
  const root = join(out, 'root')
  mkdirSync(root)
  sh('dpkg-deb', ['-x', deb, root])
  t.match(readFileSync(join(root, 'usr/bin/boot-agent'), 'utf8'), /exec \/usr\/lib\/boot-agent\/node \/usr\/lib\/boot-agent\/boot-agent\.mjs "\$@"/)
  const help = spawnSync(join(root, 'usr/lib/boot-agent/node'), [join(root, 'usr/lib/boot-agent/boot-agent.mjs'), 'daemon', '--help'], { encoding: 'utf8' })
  t.equal(help.status, 0, help.stderr)
  t.match(help.stdout, /usage: boot-agent daemon/)
  const nodeVersion = spawnSync(join(root, 'usr/lib/boot-agent/node'), ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout.trim()
  const [major = 0, minor = 0] = nodeVersion.split('.').map(Number)
  t.ok(major > 20 || (major === 20 && minor >= 3), `the runtime is Node ${nodeVersion} >= 20.3`)
  t.equal(readFileSync(join(root, 'usr/lib/systemd/system/boot-agent.service'), 'utf8'), readFileSync(join(ROOT, 'systemd/boot-agent.service'), 'utf8'))

  for (const page of ['usr/share/man/man8/boot-agent.8.gz', 'usr/share/man/man7/boot-agent-cmdline.7.gz']) {
    const r = spawnSync('man', ['--warnings', '-l', join(root, page)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' } })
    t.equal(r.status, 0, page)
    t.equal(r.stderr, '', `${page}: man --warnings is silent`)
  }

  t.test('lintian: no errors', gate('lintian'), async (t) => {
    // lintian takes a minute here: its verdict is cached by the .deb's sha256.
    const sum = createHash('sha256').update(readFileSync(deb)).digest('hex')
    const memo = join(CACHE, `lintian-${sum}.txt`)
    let report: string
    if (existsSync(memo)) report = readFileSync(memo, 'utf8')
    else {
      const r = spawnSync('lintian', ['--no-tag-display-limit', deb], { encoding: 'utf8', cwd: out, timeout: 600_000 })
      report = r.stdout
      t.not(r.status, 2, `lintian ran: ${r.stderr}`)
      mkdirSync(CACHE, { recursive: true })
      writeFileSync(memo, report)
    }
    const errors = report.split('\n').filter((l) => l.startsWith('E:'))
    t.same(errors, [], 'no E: lines')
    // The warnings left, each with its reason in docs (README "Install from the package").
    const warnings = report.split('\n').filter((l) => l.startsWith('W:')).map((l) => l.split(' ')[2])
    t.same(warnings.filter((w) => !['hardening-no-pie', 'initial-upload-closes-no-bugs'].includes(w!)), [], `only the recorded warnings: ${warnings.join(', ')}`)
  })
})

t.test('the EL9 spec builds with rpmbuild (not boot-tested) and holds the same pieces', gate('rpmbuild'), async (t) => {
  runCli(['--help'])
  const out = t.testdir()
  const rpm = sh('bash', ['scripts/package-rpm.sh', '--no-bundle', '--out', out]).trim().split('\n').pop()!
  t.equal(rpm, join(out, `boot-agent-${version}-1.noarch.rpm`))
  const files = sh('rpm', ['-qpl', rpm]).split('\n')
  for (const f of ['/usr/bin/boot-agent', '/usr/lib/boot-agent/boot-agent.mjs', '/usr/lib/dracut/modules.d/50boot-agent/module-setup.sh',
    '/usr/lib/dracut/modules.d/50boot-agent/boot-agent-initrd.service', '/usr/lib/systemd/system/boot-agent.service',
    '/usr/share/man/man8/boot-agent.8', '/usr/share/man/man7/boot-agent-cmdline.7',
    '/usr/lib/dracut/dracut.conf.d/50-boot-agent.conf']) t.ok(files.includes(f), f)
  t.match(sh('rpm', ['-qpR', rpm]), /nodejs >= 1:20\.3/, "EL9's nodejs:20 stream, not a bundled runtime")
})
