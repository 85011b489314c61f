// Types for scripts/bundle-lib.mjs (imported by test/helpers/bundle.ts).
import type { BuildOptions } from 'esbuild'

export declare const ENTRY_NAME: string
export declare const CHUNK_DIR: string
export declare const bundleOptions: (outdir: string) => BuildOptions
/** Builds the bundle into `outdir` (entry + chunks/) and returns the entry's path. */
export declare const bundle: (outdir: string) => Promise<string>
