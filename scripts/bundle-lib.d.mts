// Types for scripts/bundle-lib.mjs (imported by test/helpers/bundle.ts).
import type { BuildOptions } from 'esbuild'

export declare const ENTRY_NAME: string
export declare const CHUNK_DIR: string
export declare const PINO_FILE: string
/** The bundle's files in CHUNK_DIR, by name (chunks/*.mjs and pino.cjs). */
export declare const isChunkFile: (name: string) => boolean
export declare const pinoOptions: (outdir: string) => BuildOptions
export declare const bundleOptions: (outdir: string) => BuildOptions
/** Builds the bundle into `outdir` (entry + chunks/) and returns the entry's path. */
export declare const bundle: (outdir: string) => Promise<string>
