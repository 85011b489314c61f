/**
 * Builds the single-file agent (as scripts/bundle.mjs does) into a test's
 * own directory, so tests that run the real CLI as a child process do not
 * race on dist/.
 */
import { build } from 'esbuild'
import { join } from 'node:path'

export const bundleAgent = async (dir: string): Promise<string> => {
  const outfile = join(dir, 'boot-agent.mjs')
  await build({
    entryPoints: [join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', 'agent', 'main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    legalComments: 'none',
    banner: { js: "import { createRequire as __bootAgentCreateRequire } from 'node:module';const require = __bootAgentCreateRequire(import.meta.url);" },
    logLevel: 'warning',
  })
  return outfile
}
