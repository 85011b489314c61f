/**
 * Event ingestion (`POST /v1/nodes/:node/events`, SPEC §8): a batch from a
 * known node is read under a body limit, validated whole, charged to the
 * node's rate limit, stored durably, and only then acknowledged. A batch
 * that was not stored costs the node nothing (its spool keeps it and sends
 * it again); duplicates are refunded too.
 */
import type { IncomingMessage } from 'node:http'
import { messageOf } from '../core/errors.js'
import { faultPoint } from '../core/fault.js'
import type { Logger } from '../core/log.js'
import type { AppendResult, EventLog } from './event-log.js'
import { HttpProblem, parseJsonBody, readBody } from './http-util.js'
import { configuredNode, type NodesConfig } from './nodes-config.js'
import type { RateLimiter } from './rate-limit.js'
import { type EventLimits, parseEventBatch } from './validate-events.js'

/** An event as stored by the head. */
export type StoredEvent = AppendResult['accepted'][number]

/** Seconds a node is told to wait after the event store failed a write. */
export const STORE_RETRY_AFTER_S = 5

/** The acknowledgement of a stored batch. */
export interface EventAck {
  /** Events newly stored. */
  accepted: number
  /** Events stored before (by id), not stored again. */
  duplicates: number
}

export interface IngestDeps {
  events: Pick<EventLog, 'append'>
  limiter: Pick<RateLimiter, 'take' | 'refund'>
  /** Largest request body (bytes). */
  maxBodyBytes: number
  eventLimits: EventLimits
  log: Logger
  /** Folds a newly stored event into the head's view of its node. */
  apply: (e: StoredEvent) => void
}

/**
 * Stores the batch `req` carries for `node` and returns its acknowledgement.
 * Refusals, each before anything is stored: 404 ENONODE (node not in the
 * nodes file), 415 EMEDIATYPE, 413/400 from the body and its validation,
 * 429 ERATE with `Retry-After` (the node is over its rate), 503 ESTORE when
 * the store failed.
 */
export const ingestEvents = async (req: IncomingMessage, config: NodesConfig, node: string, deps: IngestDeps): Promise<EventAck> => {
  if (!configuredNode(config, node)) throw new HttpProblem(404, 'ENONODE', `node ${JSON.stringify(node)} is not in the nodes file`)
  const ctype = req.headers['content-type']
  if (ctype !== undefined && !/^application\/json\b/i.test(ctype)) throw new HttpProblem(415, 'EMEDIATYPE', `content-type ${ctype} is not application/json`)
  const body = parseJsonBody(await readBody(req, deps.maxBodyBytes))
  const batch = parseEventBatch(body, node, deps.eventLimits)
  const waitMs = deps.limiter.take(node, batch.length)
  if (waitMs > 0) {
    const retryAfter = Math.max(1, Math.ceil(waitMs / 1000))
    throw new HttpProblem(429, 'ERATE', `node ${node} is sending events faster than the limit; retry after ${retryAfter} s`, {
      headers: { 'retry-after': String(retryAfter) },
      details: { retryAfterSeconds: retryAfter },
    })
  }
  let result: AppendResult
  try {
    result = await deps.events.append(node, batch)
  } catch (e) {
    deps.limiter.refund(node, batch.length)
    deps.log.error({ node, err: e }, 'storing events failed')
    throw new HttpProblem(503, 'ESTORE', `events were not stored: ${messageOf(e)}; retry later`, { headers: { 'retry-after': String(STORE_RETRY_AFTER_S) } })
  }
  faultPoint('head.ingest.stored')
  if (result.duplicates) deps.limiter.refund(node, result.duplicates)
  for (const e of result.accepted) deps.apply(e)
  return { accepted: result.accepted.length, duplicates: result.duplicates }
}
