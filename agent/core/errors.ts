/**
 * Error classes with stable `code`s (in the manner of undici and cacache).
 *
 * Callers decide what to do from `code` and the typed fields, never from the
 * message text. Each layer may add context with {@link withContext}; the
 * original error stays reachable through `cause`.
 */

export type ErrorContext = Record<string, unknown>

export class BootAgentError extends Error {
  /** Stable, machine-readable code, e.g. `EINTEGRITY`. */
  readonly code: string
  /** Fields that help an operator act: paths, URLs, keys, digests. */
  readonly context: ErrorContext

  constructor(code: string, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
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
