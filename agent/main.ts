#!/usr/bin/env node
/** Entry point of the `boot-agent` binary (bundled to dist/boot-agent.mjs). */
import { main } from './cli/index.js'

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    process.stderr.write(`boot-agent: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exitCode = 1
  },
)
