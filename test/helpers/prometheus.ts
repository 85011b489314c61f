/**
 * Prometheus' own tools for the metrics tests: `promtool check metrics`
 * (Debian package prometheus) on an exposition text, and the real
 * node_exporter (prometheus-node-exporter) on a free loopback port reading a
 * textfile-collector directory, every other collector off.
 */
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { freePort } from './nginx.js'
import { waitUntil } from './wait.js'
import { stopChild } from './stop-child.js'

const execFileP = promisify(execFile)

/** `promtool check metrics` on `text`: its exit code and what it printed (lint problems, parse errors). */
export const promtoolCheck = (text: string): Promise<{ code: number; output: string }> =>
  new Promise((resolve, reject) => {
    const c = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let output = ''
    c.stdout.on('data', (d: Buffer) => (output += d.toString()))
    c.stderr.on('data', (d: Buffer) => (output += d.toString()))
    c.on('error', reject)
    c.on('close', (code) => resolve({ code: code ?? 1, output }))
    c.stdin.end(text)
  })

export interface NodeExporter {
  url: string
  /** `curl -fsS <url>/metrics`. */
  scrape(): Promise<string>
  stop(): Promise<void>
}

/** node_exporter with only the textfile collector, reading `dir`. */
export const startNodeExporter = async (dir: string): Promise<NodeExporter> => {
  const port = await freePort()
  const child = spawn('prometheus-node-exporter', [
    `--web.listen-address=127.0.0.1:${port}`,
    '--collector.disable-defaults',
    '--collector.textfile',
    `--collector.textfile.directory=${dir}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()))
  const url = `http://127.0.0.1:${port}`
  const scrape = async (): Promise<string> => (await execFileP('curl', ['-fsS', `${url}/metrics`], { timeout: 10_000 })).stdout
  const stop = (): Promise<void> => stopChild(child)
  try {
    await waitUntil('node_exporter answering', async () => {
      if (child.exitCode !== null) throw new Error(`node_exporter exited ${child.exitCode}: ${log}`)
      return scrape().then(() => true, () => false)
    }, { timeoutMs: 15_000, everyMs: 100 })
  } catch (e) {
    await stop()
    throw e
  }
  return { url, scrape, stop }
}
