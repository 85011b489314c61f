/**
 * `boot-agent` command dispatch. Commands are loaded on demand so that the
 * boot stage does not pay for the head node's or the daemon's code at start;
 * in the bundle each is its own chunk (scripts/bundle-lib.mjs). Nothing else
 * is imported here at the top: `--help` must not load the logger either.
 */
import { BootAgentError, messageOf } from '../core/errors.js'
import { LOG_FORMATS } from '../core/log-format.js'
import { type Command, type CommandContext, EXIT_USAGE } from './command.js'

/** name → [summary, loader]. Summaries live here so `--help` loads nothing. */
const COMMANDS: Record<string, [string, () => Promise<Command>]> = {
  boot: ['run the initramfs boot stage: partitions, verified image, root', async () => (await import('./boot.js')).command],
  fetch: ['fetch an image by manifest URL into a cache, verified', async () => (await import('./fetch.js')).command],
  verify: ['re-verify every object in a cache', async () => (await import('./verify.js')).command],
  cache: ['list or garbage-collect a cache (ls, gc)', async () => (await import('./cache.js')).command],
  manifest: ['write a chunked manifest for an image file', async () => (await import('./manifest.js')).command],
  keygen: ['make an ed25519 key pair for signing manifests', async () => (await import('./keygen.js')).command],
  publish: ['publish an image into a head-node store under a name', async () => (await import('./publish.js')).command],
  head: ['run the reference head node', async () => (await import('./head.js')).command],
  nodes: ['list the nodes a head node knows: image, running digest, last boot, errors', async () => (await import('./nodes.js')).command],
  daemon: ['run the node daemon (kernel-log watcher, reports, status)', async () => (await import('./daemon.js')).command],
  status: ['print this node\'s boot-agent state', async () => (await import('./status.js')).command],
  demo: ['run the local demo: loop disks, head node, two disked boots', async () => (await import('./demo.js')).command],
}

export const helpText = (): string => {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length))
  return [
    'usage: boot-agent COMMAND [options]',
    '',
    'Boots HPC compute nodes from a local, verified, content-addressed image cache.',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, [summary]]) => `  ${name.padEnd(width)}  ${summary}`),
    '',
    'Run `boot-agent COMMAND --help` for a command\'s options;',
    '`boot-agent --version` prints the version.',
    'Logs go to standard error: <N>-prefixed prose in the journal, readable lines on a',
    'terminal, JSON lines otherwise; --log-format journal|text|json (before or after',
    'COMMAND) or BOOT_AGENT_LOG_FORMAT chooses. BOOT_AGENT_LOG_LEVEL=debug for more.',
  ].join('\n')
}

/** `--log-format F` / `--log-format=F`, taken out of the arguments wherever it is. */
const takeLogFormat = (argv: string[]): { args: string[]; logFormat?: string } => {
  const args: string[] = []
  let logFormat: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string
    if (a === '--log-format') logFormat = argv[++i] ?? ''
    else if (a.startsWith('--log-format=')) logFormat = a.slice('--log-format='.length)
    else args.push(a)
  }
  return logFormat === undefined ? { args } : { args, logFormat }
}

export const main = async (argvAll: string[]): Promise<number> => {
  const { args: argv, logFormat } = takeLogFormat(argvAll)
  // Named here, before any command: `boot-agent --log-format` (value forgotten) printed the general usage only.
  if (logFormat !== undefined && !(LOG_FORMATS as readonly string[]).includes(logFormat)) {
    process.stderr.write(`boot-agent: --log-format: ${logFormat === '' ? 'needs a value' : `${JSON.stringify(logFormat)} is not one of them`}; give ${LOG_FORMATS.slice(0, -1).join(', ')} or ${LOG_FORMATS.at(-1)}\n`)
    return EXIT_USAGE
  }
  const [name, ...rest] = argv
  const out = (line: string): void => {
    process.stdout.write(line + '\n')
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(helpText())
    return name === undefined ? EXIT_USAGE : 0
  }
  if (name === '--version') {
    out(process.env.BOOT_AGENT_VERSION ?? '0.1.0')
    return 0
  }
  // Own entries only: `boot-agent constructor` is an unknown command, not Object.prototype's.
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
  if (!entry) {
    process.stderr.write(`boot-agent: unknown command ${JSON.stringify(name)}\n\n${helpText()}\n`)
    return EXIT_USAGE
  }
  const command = await entry[1]()
  if (rest.includes('--help') || rest.includes('-h')) {
    out(command.usage)
    return 0
  }
  // The logger only for a command that runs, not for `--help` (pino itself
  // loads at the first line logged, agent/core/log.ts).
  const { createLogger, logFormatFor, wasLogged } = await import('../core/log.js')
  let log: CommandContext['log']
  let journal: boolean
  try {
    log = createLogger(logFormat !== undefined ? { format: logFormat } : {})
    journal = logFormatFor(2, logFormat) === 'journal'
  } catch (e) {
    process.stderr.write(`boot-agent ${name}: ${messageOf(e)}\n`)
    return EXIT_USAGE
  }
  const ac = new AbortController()
  const onSignal = (sig: NodeJS.Signals): void => ac.abort(new BootAgentError('EABORT', `interrupted by ${sig}`))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const ctx: CommandContext = { log, out, signal: ac.signal }
  try {
    return await command.run(rest, ctx)
  } catch (e) {
    const code = e instanceof BootAgentError ? e.code : 'EUNEXPECTED'
    const message = messageOf(e)
    // A usage error is for the operator at the prompt: the plain line and where the
    // options are, not a JSON line with a stack trace.
    // The stack once: a `[failed]` line of logOp's has carried it already.
    if (code !== 'ECONFIG') ctx.log.error(wasLogged(e) ? { code } : { err: e, code }, message)
    const prefix = `boot-agent ${name}:`
    // In the journal the error line above is the message (at err); an unprefixed
    // copy would be stored again at info.
    if (!journal || code === 'ECONFIG') process.stderr.write(`${journal ? '<3>' : ''}${message.startsWith(prefix) ? message : `${prefix} ${message}`}\n`)
    if (code !== 'ECONFIG') return 1
    if (!message.includes('--help')) process.stderr.write(`${journal ? '<3>' : ''}Run \`boot-agent ${name} --help\` for its options.\n`)
    return EXIT_USAGE
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
