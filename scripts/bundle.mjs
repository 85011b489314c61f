// Bundles the agent into one ESM file for the initramfs (dist/boot-agent.mjs).
// esbuild is the one dev tool added for this: the initramfs has no node_modules,
// and a single file keeps start-up to one module load.
import { build } from 'esbuild'

await build({
  entryPoints: ['agent/main.ts'],
  outfile: 'dist/boot-agent.mjs',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  // Some dependencies are CommonJS and call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __bootAgentCreateRequire } from 'node:module';const require = __bootAgentCreateRequire(import.meta.url);" },
  logLevel: 'warning',
})
