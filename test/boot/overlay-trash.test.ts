/**
 * The boot stage's trash on a root partition that holds junk where our own
 * directories go (agent/boot/overlay.ts trashOldLayers): a `.boot-agent` or
 * `.boot-agent/trash` that is a symbolic link or a file is replaced by a real
 * directory, never followed, so an old layer is never renamed out of the
 * partition's own trash (and the daemon, which refuses a linked trash, can
 * still empty it). Plain directories: no root, no loop devices needed.
 */
import t from 'tap'
import { lstat, mkdir, readdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LAYERS_DIR, TRASH_DIR, trashOldLayers } from '../../agent/boot/overlay.js'

const oldLayers = async (root: string): Promise<void> => {
  await mkdir(join(root, LAYERS_DIR, 'upper-old', 'etc'), { recursive: true })
  await writeFile(join(root, LAYERS_DIR, 'upper-old', 'etc', 'changed'), 'x')
  await mkdir(join(root, LAYERS_DIR, 'work-old'))
}

t.test('a trash that is a symbolic link is replaced by a real directory; nothing goes where it pointed', async (t) => {
  const dir = t.testdir()
  const root = join(dir, 'root')
  const victim = join(dir, 'victim')
  await mkdir(victim)
  await oldLayers(root)
  await symlink(victim, join(root, LAYERS_DIR, TRASH_DIR))
  await trashOldLayers(root, 'new')
  t.same(await readdir(victim), [], 'nothing renamed through the link')
  t.ok((await lstat(join(root, LAYERS_DIR, TRASH_DIR))).isDirectory(), 'the trash is a real directory now')
  t.same((await readdir(join(root, LAYERS_DIR, TRASH_DIR))).sort(), ['upper-old', 'work-old'])
})

t.test('a trash that is a file, and a .boot-agent that is a symbolic link, are replaced too', async (t) => {
  const dir = t.testdir()
  const rootA = join(dir, 'a')
  await oldLayers(rootA)
  await writeFile(join(rootA, LAYERS_DIR, TRASH_DIR), 'junk')
  await trashOldLayers(rootA, 'new')
  t.same((await readdir(join(rootA, LAYERS_DIR, TRASH_DIR))).sort(), ['upper-old', 'work-old'])

  const rootB = join(dir, 'b')
  const elsewhere = join(dir, 'elsewhere')
  await mkdir(join(elsewhere, 'upper-x'), { recursive: true })
  await mkdir(rootB)
  await symlink(elsewhere, join(rootB, LAYERS_DIR))
  await trashOldLayers(rootB, 'new')
  t.same(await readdir(elsewhere), ['upper-x'], 'nothing moved or made where the link pointed')
  t.ok((await lstat(join(rootB, LAYERS_DIR))).isDirectory(), '.boot-agent is a real directory now')
  t.ok((await lstat(join(rootB, LAYERS_DIR, TRASH_DIR))).isDirectory())
})
