/** `boot-agent status [--json]`: the node's state from local files, no network. */
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError } from '../core/errors.js'
import { system } from '../core/system.js'
import { type Command, parseCommandArgs } from './command.js'
import { formatStatus, gatherStatus } from '../daemon/status.js'

const usage = `usage: boot-agent status [--json] [options]

Prints this node's boot-agent state from local files only: the boot record,
kernel-log position, last heartbeat, events waiting in the spools, and cache use.

options:
  --json                one JSON object instead of text
  --state-dir DIR       daemon state (default ${system.stateDir})
  --boot-record FILE    default ${system.runDir}/boot-record.json
  --cache-dir DIR       also report this cache directory (repeatable)
  -h, --help            this text`

export const command: Command = {
  name: 'status',
  summary: "print this node's boot-agent state",
  usage,
  run: async (argv, ctx) => {
    const { values } = parseCommandArgs('status', argv, {
      json: { type: 'boolean' },
      'state-dir': { type: 'string' },
      'boot-record': { type: 'string' },
      'cache-dir': { type: 'string', multiple: true },
    })
    // Checked here: a file as --state-dir was EUNEXPECTED ENOTDIR; a mistyped --cache-dir showed as an empty cache.
    const isDir = (p: string): Promise<boolean | undefined> => stat(p).then((st) => st.isDirectory(), () => undefined)
    if (values['state-dir'] !== undefined && (await isDir(values['state-dir'])) === false) throw new ConfigError('--state-dir', `${values['state-dir']} is not a directory`)
    for (const d of values['cache-dir'] ?? []) {
      const there = await isDir(d)
      if (there !== true) throw new ConfigError('--cache-dir', `${d} ${there === undefined ? 'does not exist' : 'is not a directory'}`)
    }
    const s = await gatherStatus({
      bootRecordPath: values['boot-record'] ?? join(system.runDir, 'boot-record.json'),
      stateDir: values['state-dir'] ?? system.stateDir,
      cacheDirs: values['cache-dir'] ?? [],
    })
    if (values.json) ctx.out(JSON.stringify(s, null, 2))
    else for (const l of formatStatus(s)) ctx.out(l)
    return 0
  },
}
