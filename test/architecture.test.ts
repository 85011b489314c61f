// The layout rules of docs/architecture.md, checked on the sources: every
// import between rooms of agent/ runs downwards (or sideways where the doc
// allows it), and no source file grows past ~400 lines without saying why at
// its top. Read as text (imports, `export … from`, dynamic `import()`), so a
// type-only import counts too: it couples the rooms all the same.
import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const agentDir = join(root, 'agent')

/**
 * Each room's level: a room imports only rooms of a lower level, or of its
 * own level where {@link SIDEWAYS} allows it. The top-level files of agent/
 * (errors, system, exec, log) are the floor with agent/core/; main.ts is the
 * entry point above everything.
 */
export const LEVELS: Record<string, number> = {
  floor: 0,
  core: 0,
  hash: 1,
  manifest: 2,
  protocol: 2,
  cache: 3,
  transport: 4,
  events: 5,
  boot: 6,
  daemon: 6,
  head: 6,
  cli: 7,
  main: 8,
}

/** Same-level imports that are part of the design (importer → imported). */
const SIDEWAYS = new Set(['core->floor', 'floor->core', 'floor->floor', 'core->core'])

/** Pairs that are never allowed, whatever the levels say (the issue's named arrows). */
const FORBIDDEN = new Set(['head->events', 'head->boot', 'head->daemon', 'cache->transport'])

const sourceFiles = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) return sourceFiles(p)
    return name.endsWith('.ts') ? [p] : []
  })

/** The room of a file under agent/: its first folder, `floor` for agent/*.ts, `main` for the entry point. */
const roomOf = (file: string): string => {
  const rel = relative(agentDir, file)
  if (rel === 'main.ts') return 'main'
  const first = rel.split('/')[0] ?? ''
  return rel.includes('/') ? first : 'floor'
}

/** Relative module specifiers a file imports or re-exports, static or dynamic. */
const importsOf = (text: string): string[] => {
  const out: string[] = []
  for (const m of text.matchAll(/\bfrom\s+'(\.{1,2}\/[^']+)'|\bimport\s*\(\s*'(\.{1,2}\/[^']+)'\s*\)|^import\s+'(\.{1,2}\/[^']+)'/gm)) {
    out.push((m[1] ?? m[2] ?? m[3]) as string)
  }
  return out
}

const files = sourceFiles(agentDir)

t.test('every room of agent/ has a level', async (t) => {
  const rooms = new Set(files.map(roomOf))
  t.same([...rooms].filter((r) => LEVELS[r] === undefined), [], 'rooms without a level: add them to LEVELS and docs/architecture.md')
})

t.test('no import runs back up from a lower room to a higher one', async (t) => {
  const wrong: string[] = []
  for (const file of files) {
    const from = roomOf(file)
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts')
      if (!target.startsWith(agentDir + '/')) continue
      const to = roomOf(target)
      if (to === from) continue
      const pair = `${from}->${to}`
      const up = (LEVELS[to] ?? 99) > (LEVELS[from] ?? -1)
      const sideways = LEVELS[to] === LEVELS[from] && !SIDEWAYS.has(pair)
      if (FORBIDDEN.has(pair) || up || sideways) wrong.push(`${relative(root, file)} imports ${spec} (${pair})`)
    }
  }
  t.same(wrong, [], 'imports against the layering of docs/architecture.md')
})

t.test('cache/ imports nothing from transport/, head/ nothing from the node-side events/', async (t) => {
  const offenders = files.filter((f) => {
    const room = roomOf(f)
    const text = readFileSync(f, 'utf8')
    return (room === 'cache' && /from '\.\.\/transport\//.test(text)) || (room === 'head' && /from '\.\.\/events\//.test(text))
  })
  t.same(offenders.map((f) => relative(root, f)), [])
})

t.test('no source file over ~400 lines without a reason written at its top', async (t) => {
  const long = files.filter((f) => {
    const text = readFileSync(f, 'utf8')
    const lines = text.split('\n').length
    // The reason is a comment line in the file's header starting "Over 400 lines:".
    return lines > 400 && !/^\s*(\*|\/\/)\s*Over 400 lines:/m.test(text.split('\n').slice(0, 40).join('\n'))
  })
  t.same(long.map((f) => relative(root, f)), [], 'split these files, or say at their top ("Over 400 lines: …") why they stay whole')
})
