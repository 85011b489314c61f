import type { Command } from './command.js'

// Placeholder until its issue lands: it says so and fails, it never pretends.
export const command: Command = {
  name: 'keygen',
  summary: '',
  usage: 'boot-agent keygen: not implemented yet',
  run: async () => {
    process.stderr.write('boot-agent keygen: not implemented yet\n')
    return 1
  },
}
