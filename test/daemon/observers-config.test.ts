/**
 * `--metrics-file` checked at the edge (agent/daemon/observers-config.ts):
 * node_exporter's textfile collector reads only `*.prom`, so a file named
 * otherwise was written every interval and never collected, silently; an
 * empty path or a directory was accepted and failed at every write.
 */
import t from 'tap'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError } from '../../agent/core/errors.js'
import { silentLogger } from '../../agent/core/log.js'
import { daemonObservers } from '../../agent/daemon/observers-config.js'

const problem = async (metricsFile: string): Promise<string> => {
  try {
    await daemonObservers({ node: 'cn7', metricsFile, log: silentLogger() })
  } catch (e) {
    return e instanceof ConfigError ? e.message : `not a ConfigError: ${String(e)}`
  }
  return 'accepted'
}

t.test('a metrics file node_exporter would never read is refused, naming the value', async (t) => {
  const dir = t.testdir()
  await mkdir(join(dir, 'boot-agent.prom'))
  t.match(await problem(join(dir, 'boot-agent.txt')), /--metrics-file: .*boot-agent\.txt.*\.prom/)
  t.match(await problem(''), /--metrics-file: /)
  t.match(await problem(join(dir, 'boot-agent.prom')), /--metrics-file: .*is a directory/)
  t.equal(await problem(join(dir, 'node.prom')), 'accepted')
})
