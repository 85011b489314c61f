/**
 * The daemon's trash deletion (agent/daemon/trash.ts) on a real directory
 * tree with the real ionice and rm: what an overlay boot's record names is
 * deleted entry by entry, with progress in the log; anything else is left.
 */
import t from 'tap'
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../../agent/core/log.js'
import { deleteCommand, emptyBootTrash, emptyTrash } from '../../agent/daemon/trash.js'

/** Records what is logged (message and fields), as the journal would show it. */
const recorder = () => {
  const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = []
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => void lines.push({ level, msg, fields })
  return { lines, log: { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') } as unknown as Logger }
}

const fill = async (trash: string, entries: number, files: number): Promise<void> => {
  for (let e = 0; e < entries; e++) {
    const d = join(trash, `upper-2026120${e}T000000Z-0000000${e}`, 'etc', 'deep')
    await mkdir(d, { recursive: true })
    for (let i = 0; i < files; i++) await writeFile(join(d, `f${i}`), 'x')
  }
}

t.test('each entry is deleted by ionice -c3 rm, with a line per entry saying how many are left', async (t) => {
  const trash = join(t.testdir(), '.boot-agent', 'trash')
  await fill(trash, 3, 20)
  const { lines, log } = recorder()
  const r = await emptyTrash(trash, { log })
  t.same(r, { deleted: 3, failed: 0, left: 0 })
  t.same(await readdir(trash), [])
  t.same(lines.filter((l) => l.fields.entry).map((l) => l.fields.left), [2, 1, 0], 'progress: entries left after each')
  t.same(deleteCommand('/x/trash/e').args.slice(0, 2), ['-c3', 'rm'], 'the idle I/O class')
})

t.test("the daemon empties only the trash an overlay boot's record names", async (t) => {
  const trash = join(t.testdir(), '.boot-agent', 'trash')
  await fill(trash, 1, 3)
  const { log } = recorder()
  t.equal(emptyBootTrash({ fallbacks: [], problems: [], root: { mode: 'unpack', trash } }, { log }), undefined, 'not after an unpack boot')
  t.equal(emptyBootTrash(undefined, { log }), undefined, 'not without a record')
  t.same((await readdir(trash)).length, 1)
  await emptyBootTrash({ fallbacks: [], problems: [], root: { mode: 'overlay', trash } }, { log })
  t.same(await readdir(trash), [])
})

t.test('a missing trash is an empty one', async (t) => {
  t.same(await emptyTrash(join(t.testdir(), 'none', '.boot-agent', 'trash'), { log: recorder().log }), { deleted: 0, failed: 0, left: 0 })
})

// The record's trash path is only ever a real `.boot-agent/trash` directory: a
// trash (or its `.boot-agent`) that is a symbolic link would send `rm -rf`
// through it, into whatever it points at (`/` on a hostile root partition).
t.test('a trash that is a symbolic link, or a path that is not .boot-agent/trash, deletes nothing', async (t) => {
  const dir = t.testdir()
  const victim = join(dir, 'victim')
  await mkdir(join(victim, 'usr'), { recursive: true })
  await writeFile(join(victim, 'usr', 'precious'), 'keep')
  await writeFile(join(victim, 'etc'), 'keep')
  const linkedTrash = join(dir, 'a', '.boot-agent', 'trash')
  await mkdir(join(dir, 'a', '.boot-agent'), { recursive: true })
  await symlink(victim, linkedTrash)
  const linkedLayers = join(dir, 'b', '.boot-agent')
  await mkdir(join(dir, 'b'))
  await mkdir(join(dir, 'elsewhere', 'trash'), { recursive: true })
  await symlink(victim, join(dir, 'elsewhere', 'trash', 'victim-link'))
  await symlink(join(dir, 'elsewhere'), linkedLayers)
  for (const trash of [linkedTrash, join(linkedLayers, 'trash'), victim, `${dir}/a/.boot-agent/../../victim`]) {
    const { lines, log } = recorder()
    await emptyBootTrash({ fallbacks: [], problems: [], root: { mode: 'overlay', trash } }, { log })
    t.same((await readdir(victim)).sort(), ['etc', 'usr'], `nothing deleted through ${trash}`)
    t.same(await readdir(join(victim, 'usr')), ['precious'])
    t.ok(lines.some((l) => l.level === 'error' && /trash/.test(l.msg)), `refusal logged for ${trash}`)
  }
  t.same(await readdir(join(dir, 'elsewhere', 'trash')), ['victim-link'], 'nothing deleted in a trash reached through a linked .boot-agent')
})
