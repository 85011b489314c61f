/**
 * The shape of one `boot-agent` subcommand. Each lives in its own file under
 * agent/cli/ and is listed in agent/cli/index.ts.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { ConfigError } from '../core/errors.js'
import type { Logger } from '../core/log.js'

export interface CommandContext {
  log: Logger
  /** Where human or JSON output goes (stdout). */
  out: (line: string) => void
  signal: AbortSignal
}

export interface Command {
  name: string
  /** One line for `boot-agent --help`. */
  summary: string
  /** The full `boot-agent NAME --help` text. */
  usage: string
  /** Runs the command; resolves to the process exit code. */
  run(argv: string[], ctx: CommandContext): Promise<number>
}

/** Usage errors exit 2, as with most Unix tools. */
export const EXIT_USAGE = 2

/**
 * `util.parseArgs` with strict checking, turning its errors into ConfigErrors
 * that name the bad option.
 */
export const parseCommandArgs = <T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  argv: string[],
  options: T,
) => {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e)
    throw new ConfigError(`boot-agent ${command}`, `${msg} (see boot-agent ${command} --help)`)
  }
}
