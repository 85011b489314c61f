// Bundles the agent for the initramfs and the service: dist/boot-agent.mjs
// (the entry) and dist/chunks/*.mjs, loaded on demand (scripts/bundle-lib.mjs).
// esbuild is the one dev tool added for this: the initramfs has no node_modules.
import { bundle } from './bundle-lib.mjs'

await bundle('dist')
