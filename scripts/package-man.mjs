// Writes the man pages: OUT/boot-agent.8 from man/boot-agent.8.in with its
// COMMANDS section made from the CLI's own --help (every subcommand, every
// option: the page cannot drift from the code), and OUT/boot-agent-cmdline.7
// as written in man/ (test/package/man.test.ts holds it to agent/boot/cmdline.ts).
// usage: node scripts/package-man.mjs --out DIR [--bundle dist/boot-agent.mjs]
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** Escapes text for a roff body line: backslashes, and a leading . or ' (a request). */
export const roffText = (s) => s.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/, '\\&$1')

/** The `name  summary` rows of `boot-agent --help`. */
export const commandsOf = (topHelp) => {
  const out = []
  let inList = false
  for (const line of topHelp.split('\n')) {
    if (/^commands:/.test(line)) { inList = true; continue }
    if (inList && line.trim() === '') break
    const m = inList && /^ {2}(\S+)\s{2,}(.*)$/.exec(line)
    if (m) out.push({ name: m[1], summary: m[2] })
  }
  return out
}

/**
 * Turns one command's usage text into roff: `usage:` lines into a synopsis,
 * column-0 text into paragraphs, indented `TAG  text` rows (options, operands,
 * sub-commands) into .TP items whose deeper-indented lines continue them.
 */
export const usageToRoff = (usage) => {
  const lines = usage.split('\n')
  const roff = []
  let i = 0
  // Synopsis: "usage: …" and its continuation lines (indented, until a blank line).
  const syn = []
  while (i < lines.length && lines[i].trim() !== '') {
    syn.push(lines[i].replace(/^usage:\s*/, '').trim())
    i++
  }
  roff.push('.nf', ...syn.map((l) => `.B ${roffText(l).replace(/"/g, '\\(dq')}`), '.fi')
  let para = []
  let item = null
  const flush = () => {
    if (para.length) roff.push('.PP', ...para.map(roffText))
    if (item) roff.push('.TP', `.B ${roffText(item.tag).replace(/"/g, '\\(dq')}`, ...(item.text.length ? item.text.map(roffText) : ['\\&']))
    para = []
    item = null
  }
  for (; i < lines.length; i++) {
    const line = lines[i]
    if (line.trim() === '') { flush(); continue }
    // A section header such as "options:" on its own line.
    if (/^[a-z][a-z ]*:$/.test(line)) { flush(); roff.push('.PP', `.I ${roffText(line)}`); continue }
    const row = /^ {1,4}(\S(?:\S| (?! ))*)(?: {2,}(.*))?$/.exec(line)
    const indent = /^ */.exec(line)[0].length
    if (item && indent > item.indent) { item.text.push(line.trim()); continue }
    if (row && (row[1].startsWith('-') || row[2] !== undefined)) {
      flush()
      item = { tag: row[1], text: row[2] ? [row[2].trim()] : [], indent }
      continue
    }
    if (item) { item.text.push(line.trim()); continue }
    para.push(line.trim())
  }
  flush()
  return roff
}

/** Markdown inline → roff: `code` and **bold** in bold, the rest escaped. */
export const mdInline = (s) =>
  s.split(/(`[^`]*`|\*\*[^*]*\*\*)/).map((part) => {
    if (/^`.*`$/.test(part) || /^\*\*.*\*\*$/.test(part)) return `\\fB${roffText(part.replace(/^(`|\*\*)|(`|\*\*)$/g, '')).replace(/^\\&/, '')}\\fR`
    return roffText(part)
  }).join('').replace(/^([.'])/, '\\&$1')

/** The `## Kernel command line` section of README.md: its `### rd.bootagent.KEY` subsections. */
export const cmdlineSection = (readme) => {
  const m = /^## Kernel command line.*$/m.exec(readme)
  if (!m) throw new Error('package-man: README.md has no "## Kernel command line" section')
  const rest = readme.slice(m.index + m[0].length)
  const end = rest.search(/^## /m)
  return end < 0 ? rest : rest.slice(0, end)
}

/** Markdown (paragraphs, ### headings, | tables |) → roff, for the cmdline section. */
export const mdToRoff = (md) => {
  const roff = []
  let para = []
  const flush = () => {
    if (para.length) roff.push('.PP', ...para.map(mdInline))
    para = []
  }
  for (const line of md.split('\n')) {
    const h = /^### (.*)$/.exec(line)
    if (h) {
      flush()
      const key = /^rd\.bootagent\.\S+$/.test(h[1])
      roff.push(key ? `.SS ${roffText(h[1])}` : `.SH "${mdInline(h[1]).replace(/"/g, '\\(dq').toUpperCase().replace(/\\FB|\\FR/g, '')}"`)
      continue
    }
    if (/^\|/.test(line)) {
      flush()
      const cells = line.split('|').slice(1, -1).map((c) => c.trim())
      if (cells.every((c) => /^-+$/.test(c)) || cells[0] === 'code') continue
      roff.push('.TP', `.B ${roffText(cells[0] ?? '')}`, mdInline(cells.slice(1).join(' \u2014 ')))
      continue
    }
    if (line.trim() === '') { flush(); continue }
    // "Example: …" on a line of its own, as in the README.
    if (/^Example:/.test(line)) { flush(); roff.push('.br', mdInline(line.trim())); continue }
    para.push(line.trim())
  }
  flush()
  return roff
}

const main = () => {
  const { values } = parseArgs({ options: { out: { type: 'string' }, bundle: { type: 'string' } } })
  if (!values.out) throw new Error('package-man: --out DIR is required')
  const bundle = resolve(values.bundle ?? join(REPO, 'dist', 'boot-agent.mjs'))
  const help = (args) => execFileSync(process.execPath, [bundle, ...args], { encoding: 'utf8', env: { ...process.env, BOOT_AGENT_LOG_LEVEL: 'silent' } })
  const version = help(['--version']).trim()
  const body = []
  for (const { name, summary } of commandsOf(help(['--help']))) {
    body.push(`.SS ${name}`, roffText(summary[0].toUpperCase() + summary.slice(1) + '.'), ...usageToRoff(help([name, '--help']).trimEnd()))
  }
  const date = new Date(Number(process.env.SOURCE_DATE_EPOCH ?? Date.now() / 1000) * 1000).toISOString().slice(0, 10)
  const fill = (text) => text.replaceAll('@VERSION@', version).replaceAll('@DATE@', date)
  mkdirSync(values.out, { recursive: true })
  const page8 = fill(readFileSync(join(REPO, 'man', 'boot-agent.8.in'), 'utf8')).replace('@COMMANDS@\n', body.join('\n') + '\n')
  writeFileSync(join(values.out, 'boot-agent.8'), page8)
  const keys = mdToRoff(cmdlineSection(readFileSync(join(REPO, 'README.md'), 'utf8')))
  const page7 = fill(readFileSync(join(REPO, 'man', 'boot-agent-cmdline.7.in'), 'utf8')).replace('@KEYS@\n', keys.join('\n') + '\n')
  writeFileSync(join(values.out, 'boot-agent-cmdline.7'), page7)
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main()
