/**
 * Error classes with stable `code`s (in the manner of undici and cacache),
 * and the one closed set those codes come from: {@link ERROR_CODES}.
 *
 * Callers decide what to do from `code` and the typed fields, never from the
 * message text. Each layer may add context with {@link withContext}; the
 * original error stays reachable through `cause`.
 *
 * A new code is added here (and to docs/errors.md, which
 * test/core/errors.test.ts holds to this list); `BootAgentError` takes no
 * other, so tsc refuses a code invented at a call site.
 */

/**
 * Every code the agent and the head raise, with what it means to an
 * operator. Codes sent over the wire or documented (docs/cache.md,
 * docs/protocol.md) never change; the head's problem codes are the subset
 * `HTTP_PROBLEM_CODES` (agent/head/http-util.ts).
 */
export const ERROR_CODES = {
  EABORT: 'an operation stopped because it was asked to (a signal, Ctrl-C, a closing worker, a client that hung up); never retried',
  EARCH: "the node's architecture does not match the image (or the one configured for it)",
  EAUTH: 'the head wants a bearer token and got none or a wrong one',
  EBADARCH: 'an architecture in a request path or query is not one the head accepts',
  EBADDIGEST: 'a digest in a request path or query is not a lower-case hex sha256',
  EBADEVENT: 'an event sent to the head does not follow its schema (`field` names where)',
  EBADJSON: 'a request body is empty or not JSON',
  EBADNAME: 'a node or image name in a request path is not acceptable',
  EBADPATH: 'a request path is not acceptable',
  EBADRECORD: 'the boot record the boot stage left is not a JSON object',
  EBADSIZE: 'bytes whose length is not the pinned size',
  EBUSY: 'the head is at its cap of requests or image streams and sheds this one (503 with Retry-After, spread per node)',
  ECACHE: 'the cache directory, or a file in it, is not in a shape the agent can use',
  ECACHEFULL: 'the cache cannot hold what it was asked to, even after evicting everything unpinned',
  ECOMMAND: 'an external command could not be run or failed',
  ECONFIG: 'bad configuration: command line, kernel command line, environment or a file',
  ECONNRESET: 'the server closed the connection before a response (also Node\'s errno, passed through)',
  EDEMO: 'the demo cannot run here or one of its steps failed',
  EDESCRIPTOR: 'a boot descriptor from the head does not follow its schema',
  EFORMAT: 'refused to format a disk that is on USB or removable',
  EFSTYPE: 'a partition holds a filesystem the agent does not mount',
  EHASHIO: 'a file could not be read while hashing it',
  EHTTP: 'an HTTP answer the agent cannot use: a final status (or retries used up), or a response that breaks HTTP/1.1',
  EIDENTITY: "the head refused a request speaking as a node the caller may not speak for (wrong address, or not that node's credential)",
  EIDLE: 'the network went silent: no response, or no bytes, within the deadline (retried)',
  EINCOMPLETE: 'a download ended with chunks of the image still missing',
  EINSTALL: "the agent's installation is incomplete (a file of its bundle is missing)",
  EINTEGRITY: 'bytes whose digest is not the one they were pinned to',
  EINTERNAL: 'a bug: an invariant of the agent or the head did not hold',
  ELOCALIO: "this machine's disk failed while the cache was written",
  ELOCKED: 'another live process holds the lock past the deadline',
  EMANIFEST: 'a manifest does not follow its schema (`field` names where)',
  EMEDIATYPE: 'an event batch sent to the head is not application/json',
  EMETHOD: 'a request to the head used a method its path does not take',
  ENETWORK: 'a request failed below HTTP and the error carried no code of its own (the cause says more)',
  ENOCACHE: 'no cache where one must already exist (a missing directory, or one that is not a cache)',
  ENOIMAGE: 'the head has no such image (name or digest never published, or none configured)',
  ENOINIT: 'the image has no init program',
  ENOMIRROR: 'every URL of the image failed; none is left to try',
  ENONODE: 'the head does not know the node',
  ENOTBLK: 'a device the configuration names is not a block device',
  ENOTFOUND: 'the head has no such endpoint (from Node, also: a host name DNS does not know)',
  ENOURL: 'a manifest lists no URL but chunks of the image are missing',
  EOVERLAY: 'the image could not be mounted as an overlay root (loop mount, trashing the old layers, or the overlay)',
  EPINNED: 'a cache object is mounted under a running root: it is not removed or rewritten until that root is gone',
  EPLAN: 'the boot plan lacks what its boot style needs',
  ERANGE: 'a byte range that does not fit: outside the image (head), or answered with another range than asked (node)',
  ERATE: 'a node sends events faster than the head allows',
  ESIGNATURE: 'a signature that is missing or does not verify against the configured key',
  ESTORE: 'the head could not store events durably; nothing of the batch was kept',
  ETIMEOUT: 'a command or probe did not finish within its deadline',
  ETOOLARGE: 'a body over its size limit (a request to the head, or an answer to the agent)',
  ETOOMANY: 'more events in one batch than the head allows',
  ETRUNCATED: 'a response ended before all its bytes came (retried)',
  EUNEXPECTED: 'an error without a code of ours reached the top (the message says what it was)',
  EUNPACK: 'the image could not be unpacked into the root',
  EWORKER: 'a hashing worker thread failed, exited, or answered out of turn',
} as const

/** One code of the closed set {@link ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES

/** True when `code` is in {@link ERROR_CODES}. */
export const isErrorCode = (code: string): code is ErrorCode => Object.hasOwn(ERROR_CODES, code)

declare const foreign: unique symbol
/**
 * A code of Node's, undici's or OpenSSL's (`ECONNREFUSED`, `UND_ERR_SOCKET`,
 * `CERT_HAS_EXPIRED`, …), kept on the error that wraps a network failure so
 * the retry policy can read it: theirs, so not in {@link ERROR_CODES}. Made
 * only by {@link foreignCode}, so a code of ours cannot slip in as one.
 */
export type ForeignCode = string & { readonly [foreign]: true }

/** `code` of a wrapped Node, undici or OpenSSL error, kept as it was (see {@link ForeignCode}). */
export const foreignCode = (code: string): ForeignCode => code as ForeignCode

export type ErrorContext = Record<string, unknown>

export class BootAgentError extends Error {
  /** Stable, machine-readable code from {@link ERROR_CODES}, e.g. `EINTEGRITY` (or a wrapped network error's {@link ForeignCode}). */
  readonly code: ErrorCode | ForeignCode
  /** Fields that help an operator act: paths, URLs, keys, digests. */
  readonly context: ErrorContext

  constructor(code: ErrorCode | ForeignCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
    this.context = context
  }

  /** A copy of this error's context merged with more; message unchanged. */
  withContext(more: ErrorContext): this {
    Object.assign(this.context, more)
    return this
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, ...this.context }
  }
}

/** Bytes whose digest is not the one they were pinned to. */
export class IntegrityError extends BootAgentError {
  readonly expected: string
  readonly found: string
  readonly algorithm: string
  readonly url: string | undefined

  constructor(opts: { algorithm: string; expected: string; found: string; url?: string; what?: string; context?: ErrorContext }) {
    const where = opts.url ? ` from ${opts.url}` : ''
    const what = opts.what ?? 'data'
    super(
      'EINTEGRITY',
      `${what}${where} failed ${opts.algorithm} check: expected ${opts.expected}, found ${opts.found}`,
      { algorithm: opts.algorithm, expected: opts.expected, found: opts.found, url: opts.url, ...opts.context },
    )
    this.expected = opts.expected
    this.found = opts.found
    this.algorithm = opts.algorithm
    this.url = opts.url
  }
}

/** Bytes whose length is not the pinned size. */
export class SizeError extends BootAgentError {
  readonly expected: number
  readonly found: number
  constructor(opts: { expected: number; found: number; url?: string; what?: string; context?: ErrorContext }) {
    const where = opts.url ? ` from ${opts.url}` : ''
    super(
      'EBADSIZE',
      `${opts.what ?? 'data'}${where} has the wrong size: expected ${opts.expected} bytes, found ${opts.found}`,
      { expected: opts.expected, found: opts.found, url: opts.url, ...opts.context },
    )
    this.expected = opts.expected
    this.found = opts.found
  }
}

/** A manifest (or descriptor) that does not follow its schema. `field` is a JSON path. */
export class ManifestError extends BootAgentError {
  readonly field: string
  constructor(field: string, problem: string, context: ErrorContext = {}) {
    super('EMANIFEST', `manifest field ${field}: ${problem}`, { field, ...context })
    this.field = field
  }
}

/** Bad configuration from the command line, the kernel command line or a file. */
export class ConfigError extends BootAgentError {
  readonly key: string
  constructor(key: string, problem: string, context: ErrorContext = {}) {
    super('ECONFIG', `${key}: ${problem}`, { key, ...context })
    this.key = key
  }
}

/** An HTTP response that is not what we asked for. */
export class HttpError extends BootAgentError {
  readonly status: number
  readonly url: string
  /** Milliseconds the server asked us to wait (`Retry-After`), when it did. */
  readonly retryAfterMs: number | undefined
  constructor(opts: { status: number; url: string; retryAfterMs?: number; message?: string }) {
    super('EHTTP', opts.message ?? `HTTP ${opts.status} from ${opts.url}`, {
      status: opts.status,
      url: opts.url,
      retryAfterMs: opts.retryAfterMs,
    })
    this.status = opts.status
    this.url = opts.url
    this.retryAfterMs = opts.retryAfterMs
  }
}

/** A signature that is missing or does not verify against the configured key. */
export class SignatureError extends BootAgentError {
  constructor(message: string, context: ErrorContext = {}) {
    super('ESIGNATURE', message, context)
  }
}

/** The cache cannot hold what it was asked to, even after eviction. */
export class CacheFullError extends BootAgentError {
  readonly needed: number
  readonly available: number
  constructor(opts: { needed: number; available: number; dir: string }) {
    super(
      'ECACHEFULL',
      `cache ${opts.dir} cannot hold ${opts.needed} bytes (about ${opts.available} available after eviction)`,
      { needed: opts.needed, available: opts.available, dir: opts.dir },
    )
    this.needed = opts.needed
    this.available = opts.available
  }
}

/** An external command that failed. */
export class CommandError extends BootAgentError {
  readonly command: string
  readonly args: readonly string[]
  readonly exitCode: number | null
  readonly stderr: string
  constructor(opts: { command: string; args: readonly string[]; exitCode: number | null; signal?: string | null; stderr: string }) {
    const how = opts.exitCode === null ? `was killed by ${opts.signal ?? 'a signal'}` : `exited ${opts.exitCode}`
    const tail = opts.stderr.trim().split('\n').slice(-3).join(' | ')
    super('ECOMMAND', `${opts.command} ${how}${tail ? `: ${tail}` : ''}`, {
      command: opts.command,
      args: opts.args,
      exitCode: opts.exitCode,
      signal: opts.signal ?? undefined,
    })
    this.command = opts.command
    this.args = opts.args
    this.exitCode = opts.exitCode
    this.stderr = opts.stderr
  }
}

/** True when `e` is a Node system error with the given errno code. */
export const isErrno = (e: unknown, ...codes: string[]): e is NodeJS.ErrnoException =>
  typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string' &&
  codes.includes((e as { code: string }).code)

/** The message of anything thrown, for logs. */
export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))
