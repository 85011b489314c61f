/**
 * `boot-agent head`: runs the reference head node until SIGTERM/SIGINT.
 * SIGHUP re-reads the nodes file (an invalid one is refused and the old kept).
 */
import { readdir, stat } from 'node:fs/promises'
import { ConfigError, isErrno } from '../core/errors.js'
import { makeDir } from '../core/make-dir.js'
import { startHead } from '../head/server.js'
import { type Command, parseCommandArgs } from './command.js'

const USAGE = `usage: boot-agent head --store DIR --nodes FILE [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [options]

Runs the reference head node (protocol: docs/protocol.md): boot descriptors,
manifests and image bytes (with Range) from the store written by
\`boot-agent publish\`, durable event storage, and GET /v1/consistency.

options:
  --store DIR          image store (see boot-agent publish); it must exist (a
                       mistyped path is refused, not served empty)
  --init               create the store when it does not exist (a new, empty head)
  --nodes FILE         nodes file (JSON; see README "Head node"); SIGHUP reloads it
  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080; :PORT for all)
  --token T            require "Authorization: Bearer T" on every request
                       (or BOOT_AGENT_HEAD_TOKEN, which keeps it out of ps); a node
                       with its own tokenSha256 in the nodes file uses its own token
                       instead, and nodes may be bound to addresses (docs/security.md)
  --events DIR         event store (default STORE/events)
  --redirect-to-mirrors  answer image-byte requests with 302 to the manifest's mirror
  --max-body BYTES     largest request body (default 1048576)
  --rate EVENTS/S      per-node event rate (default 200; burst 10x)
  --tls-cert FILE      serve https with this certificate chain (PEM); SIGHUP re-reads it
  --tls-key FILE       and its private key (PEM); nodes trust the head's CA through
                       the dracut module's --ca FILE or BOOT_AGENT_CA=FILE
  --max-image-streams N  image byte streams at once (default 64); more get 503
                       with a Retry-After spread per node (docs/protocol.md)
  --max-requests N     requests in flight at once (default 1024); likewise

Logs one line per boot (info) and per failed boot (warn), and a warning for
each image the nodes file names that the store has not published.
Prints {"url": ...} on standard output once listening. As a service:
systemd/boot-agent-head.service (docs/operations.md, "Head node service").
`

/**
 * A store that is not there is refused unless `init`: a mistyped --store
 * used to be created empty and served, every node then refused its image.
 */
const checkStore = async (dir: string, init: boolean): Promise<void> => {
  try {
    if (!(await stat(dir)).isDirectory()) throw new ConfigError('--store', `${dir} is not a directory`)
    // An existing directory with other things in it and no store (`--store /srv` for
    // /srv/boot-agent) used to be served empty and littered with the store's directories.
    const entries = await readdir(dir)
    if (!init && entries.length > 0 && !entries.includes('names') && !entries.includes('objects')) {
      throw new ConfigError('--store', `${dir} is not a boot-agent store (no names/ or objects/ in it, but ${entries.length} other entries): check the path (the directory \`boot-agent publish --store\` wrote), or --init to make a store in it`)
    }
  } catch (e) {
    if (!isErrno(e, 'ENOENT')) throw e
    if (init) return // startHead creates it
    throw new ConfigError('--store', `no store at ${dir} (no such directory): check the path; a store is made by \`boot-agent publish IMAGE --name NAME --store ${dir}\`, or start an empty one with --init`)
  }
}

/**
 * The site token, checked: an explicit empty --token (`--token "$(cat f)"`
 * of an empty file) would start an open head, and a space or newline a head
 * no node can pass (nodes send their token file's first line, trimmed; a
 * header cannot carry a newline). An empty BOOT_AGENT_HEAD_TOKEN is "none",
 * as the env template writes it. The token is never repeated.
 */
const headToken = (flag: string | undefined, env: string | undefined): string | undefined => {
  const [where, token] = flag !== undefined ? ['--token', flag] : ['BOOT_AGENT_HEAD_TOKEN', env]
  if (flag === '') throw new ConfigError('--token', 'is empty: give the token, or leave --token out for a head without one')
  if (token && !/^[\x21-\x7e]+$/.test(token)) {
    throw new ConfigError(where, 'the token must be visible ASCII without spaces or newlines, as nodes send it (e.g. openssl rand -hex 32)')
  }
  return token || undefined
}

export const command: Command = {
  name: 'head',
  summary: 'run the reference head node',
  usage: USAGE,
  run: async (argv, ctx) => {
    const { values, positionals } = parseCommandArgs('head', argv, {
      store: { type: 'string' },
      nodes: { type: 'string' },
      listen: { type: 'string' },
      token: { type: 'string' },
      events: { type: 'string' },
      'redirect-to-mirrors': { type: 'boolean' },
      'max-body': { type: 'string' },
      rate: { type: 'string' },
      init: { type: 'boolean' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'max-image-streams': { type: 'string' },
      'max-requests': { type: 'string' },
    })
    if (positionals.length) throw new ConfigError('boot-agent head', `unexpected argument ${JSON.stringify(positionals[0])}`)
    if (!values.store) throw new ConfigError('--store', 'is required')
    if (!values.nodes) throw new ConfigError('--nodes', 'is required')
    if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) {
      throw new ConfigError(values['tls-cert'] === undefined ? '--tls-cert' : '--tls-key', 'goes with --tls-cert FILE --tls-key FILE: give both or neither')
    }
    await checkStore(values.store, values.init === true)
    if (values.events !== undefined && (await stat(values.events).then((st) => !st.isDirectory(), () => false))) {
      throw new ConfigError('--events', `${values.events} is not a directory (the event store is a directory of per-node files; default STORE/events)`)
    }
    if (values.events !== undefined) {
      await makeDir(values.events, 0o750).catch((e: unknown) => {
        throw new ConfigError('--events', `${e instanceof Error ? e.message : String(e)} (give a directory the head may create and write)`)
      })
    }
    const positive = (key: string, v: string | undefined): number | undefined => {
      if (v === undefined) return undefined
      const n = Number(v)
      if (!Number.isSafeInteger(n) || n <= 0) throw new ConfigError(key, `must be a positive integer (got ${JSON.stringify(v)})`)
      return n
    }
    const maxBody = positive('--max-body', values['max-body'])
    const rate = positive('--rate', values.rate)
    const maxImageStreams = positive('--max-image-streams', values['max-image-streams'])
    const maxRequests = positive('--max-requests', values['max-requests'])
    const token = headToken(values.token, process.env.BOOT_AGENT_HEAD_TOKEN)
    const head = await startHead({
      store: values.store,
      nodes: values.nodes,
      listen: values.listen ?? '127.0.0.1:8080',
      log: ctx.log,
      ...(token ? { token } : {}),
      ...(values.events ? { eventsDir: values.events } : {}),
      ...(values['redirect-to-mirrors'] ? { redirectToMirrors: true } : {}),
      ...(maxBody ? { maxBodyBytes: maxBody } : {}),
      ...(rate ? { rateLimit: { eventsPerSecond: rate, burstEvents: rate * 10 } } : {}),
      ...(values['tls-cert'] && values['tls-key'] ? { tls: { certFile: values['tls-cert'], keyFile: values['tls-key'] } } : {}),
      ...(maxImageStreams || maxRequests ? { admission: { ...(maxImageStreams ? { maxImageStreams } : {}), ...(maxRequests ? { maxRequests } : {}) } } : {}),
    })
    ctx.out(JSON.stringify({ url: head.url }))
    const onHup = (): void => {
      void head.reload()
    }
    process.on('SIGHUP', onHup)
    try {
      // main() turns SIGTERM/SIGINT into an abort of ctx.signal.
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve()
        else ctx.signal.addEventListener('abort', () => resolve(), { once: true })
      })
      ctx.log.info({ reason: String(ctx.signal.reason) }, 'shutting down')
      await head.close()
      return 0
    } finally {
      process.off('SIGHUP', onHup)
    }
  },
}
