/**
 * A stand-in for the `fsverity` tool on a kernel with fs-verity, for host tests:
 * this machine's kernel has none (CONFIG_FS_VERITY is not set), so a real seal
 * cannot happen here (the VM tests, test/vm/overlay.test.ts, do it for real).
 */
import { stat } from 'node:fs/promises'
import { run, type Runner } from '../../agent/core/exec.js'

/**
 * A `fsverity` for a kernel with fs-verity (see the file's comment): `enable`
 * records the digest the real `fsverity digest` computes of the file then (the
 * tree a kernel builds when it seals), `measure` answers it, or ENODATA for a
 * file never sealed, as the kernel does.
 */
export const sealedKernel = (calls: string[][] = []): Runner => {
  const sealed = new Map<string, string>()
  return async (cmd, args, opts) => {
    calls.push([...args])
    const path = args[1]!
    // Sealing is a property of the inode, not of the name (a repaired object is a new file).
    const key = await stat(path).then((st) => `${st.dev}:${st.ino}`, () => path)
    if (args[0] === 'enable') {
      if (sealed.has(key)) return { exitCode: 1, signal: null, stdout: '', stderr: `ERROR: FS_IOC_ENABLE_VERITY failed on '${path}': File exists\n` }
      sealed.set(key, (await run(cmd, ['digest', path], opts)).stdout)
      return { exitCode: 0, signal: null, stdout: '', stderr: '' }
    }
    if (args[0] === 'measure') {
      const line = sealed.get(key)
      return line ? { exitCode: 0, signal: null, stdout: line, stderr: '' } : { exitCode: 1, signal: null, stdout: '', stderr: `ERROR: FS_IOC_MEASURE_VERITY failed on '${path}': No data available\n` }
    }
    throw new Error(`unexpected fsverity ${args.join(' ')}`)
  }
}

