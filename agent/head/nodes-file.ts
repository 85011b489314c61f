/**
 * The nodes file the head serves from (`--nodes`): read and checked at
 * start, re-read on reload (SIGHUP), where a file that does not parse is
 * refused and the previous config kept.
 */
import { readFile } from 'node:fs/promises'
import { ConfigError, messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { type NodesConfig, parseNodesConfig } from './nodes-config.js'

/** Reads and checks the nodes file at `path`; ConfigError (`--nodes`) saying what is wrong. */
export const loadNodesFile = async (path: string): Promise<NodesConfig> => {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (e) {
    throw new ConfigError('--nodes', `cannot read ${path}: ${messageOf(e)}`)
  }
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw new ConfigError('--nodes', `${path} is not valid JSON: ${messageOf(e)}`)
  }
  try {
    return parseNodesConfig(v)
  } catch (e) {
    throw new ConfigError('--nodes', `${path}: ${messageOf(e)}`)
  }
}

/** The config in force: from a file (reloadable) or given parsed (fixed). */
export class NodesSource {
  private constructor(
    private readonly source: string | NodesConfig,
    private current: NodesConfig,
    private readonly log: Logger,
    private readonly check: (config: NodesConfig) => void,
  ) {}

  /**
   * Loads `source` (a path or a parsed config); throws when the file is bad.
   * `check`: what the head adds to the file's own rules (a ConfigError refuses it, at start and at reload).
   */
  static async open(source: string | NodesConfig, log: Logger, check: (config: NodesConfig) => void = () => {}): Promise<NodesSource> {
    const config = typeof source === 'string' ? await loadNodesFile(source) : source
    check(config)
    return new NodesSource(source, config, log, check)
  }

  /** The config in force now. */
  get config(): NodesConfig {
    return this.current
  }

  /** Re-reads the nodes file; keeps the old config when the new one is invalid. True when it loaded. */
  async reload(): Promise<boolean> {
    if (typeof this.source !== 'string') return false
    try {
      const config = await loadNodesFile(this.source)
      this.check(config)
      this.current = config
      this.log.info({ nodes: Object.keys(this.current.nodes).length, file: this.source }, 'nodes file reloaded')
      return true
    } catch (e) {
      this.log.error({ err: e, file: this.source }, `nodes file not reloaded, keeping the previous one: ${messageOf(e)}`)
      return false
    }
  }
}
