/**
 * The man pages (scripts/package-man.mjs) against the code they document:
 * boot-agent(8) lists every subcommand and every option the CLI's own --help
 * has (generic: a command or flag added anywhere shows up here), and
 * boot-agent-cmdline(7) documents every rd.bootagent.* key of
 * agent/boot/cmdline.ts (a key added without a README "### rd.bootagent.KEY"
 * section fails here). Both render with `man --warnings` silent.
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CMDLINE_KEYS } from '../../agent/boot/cmdline.js'
import { gate } from '../helpers/capability.js'
import { BUNDLE, ROOT, runCli } from '../helpers/run-cli.js'

const pages = t.testdir()
runCli(['--help']) // builds the bundle when this file runs alone
execFileSync(process.execPath, [join(ROOT, 'scripts', 'package-man.mjs'), '--out', pages, '--bundle', BUNDLE], { stdio: 'inherit' })
const page8 = readFileSync(join(pages, 'boot-agent.8'), 'utf8')
const page7 = readFileSync(join(pages, 'boot-agent-cmdline.7'), 'utf8')
/** How roff spells a literal text: every hyphen a minus (package-man.mjs roffText). */
const roff = (s: string): string => s.replace(/-/g, '\\-')
const flagsOf = (help: string): string[] => [...new Set(help.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) ?? [])]

t.test('boot-agent(8) has a section for every subcommand and every option of its --help', async (t) => {
  const top = runCli(['--help']).stdout
  const commands = [...top.matchAll(/^ {2}([a-z][a-z0-9-]*) {2,}/gm)].map((m) => m[1]!)
  t.ok(commands.length >= 10, `commands found in --help: ${commands.join(' ')}`)
  for (const c of commands) {
    t.ok(page8.includes(`\n.SS ${c}\n`), `section for ${c}`)
    const help = runCli([c, '--help']).stdout
    const missing = flagsOf(help).filter((f) => !page8.includes(roff(f)))
    t.same(missing, [], `every option of ${c} --help is in the page`)
  }
  t.same(flagsOf(top).filter((f) => !page8.includes(roff(f))), [], 'and the options of boot-agent --help (--log-format)')
})

t.test('boot-agent-cmdline(7) documents every rd.bootagent.* key the parser knows, and no other', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const documented = [...readme.matchAll(/^### rd\.bootagent\.(\S+)$/gm)].map((m) => m[1]!)
  t.same(CMDLINE_KEYS.filter((k) => !documented.includes(k)), [], 'every key of agent/boot/cmdline.ts has a "### rd.bootagent.KEY" section in README.md')
  t.same(documented.filter((k) => !CMDLINE_KEYS.includes(k)), [], 'no section for a key the parser does not know')
  for (const k of CMDLINE_KEYS) t.ok(page7.includes(`\n.SS ${roff(`rd.bootagent.${k}`)}\n`), `rd.bootagent.${k} in the page`)
})

t.test('both pages render without warnings (man --warnings)', gate('man'), async (t) => {
  for (const p of ['boot-agent.8', 'boot-agent-cmdline.7']) {
    const r = spawnSync('man', ['--warnings', '-l', join(pages, p)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' } })
    t.equal(r.status, 0, `${p} renders`)
    t.equal(r.stderr, '', `${p}: no warnings`)
    t.match(r.stdout, /SYNOPSIS/)
  }
})
