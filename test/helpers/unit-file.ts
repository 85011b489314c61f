/**
 * Checks shared by the systemd unit tests (test/daemon/service-unit.test.ts,
 * test/head/service-unit.test.ts): the real `systemd-analyze verify` of a
 * unit, and the house rule that every group of directives has a comment.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * `systemd-analyze verify` of `text` written as `dir/name`, with the
 * ExecStart binary `execStart` swapped for /bin/true (verify insists the
 * binary exists; the installed one is not here): its output, or a thrown
 * error carrying what it said.
 */
export const analyzeVerify = async (text: string, execStart: string, dir: string, name: string): Promise<string> => {
  const copy = join(dir, name)
  await writeFile(copy, text.replace(`ExecStart=${execStart}`, `ExecStart=${existsSync('/bin/true') ? '/bin/true' : '/usr/bin/true'}`))
  try {
    return execFileSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string }
    throw new Error(`systemd-analyze verify failed: ${err.stderr ?? ''}${err.stdout ?? ''}`)
  }
}

/** Directives whose group (consecutive directive lines) has no comment line above it. */
export const uncommentedDirectives = (text: string): string[] => {
  const lines = text.split('\n').map((l) => l.trim())
  const bare: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!
    if (!l || l.startsWith('#') || l.startsWith('[')) continue
    // Walk up through the directive group to its head; the line above it must be a comment.
    let j = i - 1
    while (j >= 0 && lines[j] && !lines[j]!.startsWith('#') && !lines[j]!.startsWith('[')) j--
    if (!(j >= 0 && lines[j]!.startsWith('#')) && !/^(Description|Documentation)=/.test(l)) bare.push(l)
  }
  return bare
}
