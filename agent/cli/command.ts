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
 * What `util.parseArgs` refused, said for an operator: an unknown option by
 * its name (Node's own text is about positional arguments starting with
 * `-`), with the command's options when the name is close to none of them.
 */
export const parseArgsProblem = (e: unknown, known: readonly string[]): string => {
  const msg = e instanceof Error ? e.message : String(e)
  if ((e as { code?: unknown }).code !== 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return msg
  const name = /^Unknown option '([^']+)'/.exec(msg)?.[1] ?? msg
  return `unknown option ${name}; options: ${known.map((k) => `--${k}`).join(' ')}`
}

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
    throw new ConfigError(`boot-agent ${command}`, `${parseArgsProblem(e, Object.keys(options))} (see boot-agent ${command} --help)`)
  }
}
