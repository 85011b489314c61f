import type { Command } from './command.js'

// Placeholder until its issue lands: it says so and fails, it never pretends.
export const command: Command = {
  name: 'verify',
  summary: '',
  usage: 'boot-agent verify: not implemented yet',
  run: async () => {
    process.stderr.write('boot-agent verify: not implemented yet\n')
    return 1
  },
}
