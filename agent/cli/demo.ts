import type { Command } from './command.js'

// Placeholder until its issue lands: it says so and fails, it never pretends.
export const command: Command = {
  name: 'demo',
  summary: '',
  usage: 'boot-agent demo: not implemented yet',
  run: async () => {
    process.stderr.write('boot-agent demo: not implemented yet\n')
    return 1
  },
}
