/**
 * A classified, correlated kernel error as the coalescer's input: which
 * device it is charged to (or why none), the typed fields of its
 * `squashfs-error`/`io-error` event, and the block it names. Pure: the
 * daemon's reader (daemon.ts) does the effects.
 */
import type { KernelErrorData } from '../protocol/payloads.js'
import type { CoalesceInput } from '../events/coalesce.js'
import type { ClassifiedError } from './classify.js'
import type { Correlation } from './correlate.js'
import type { KmsgRecord } from './kmsg.js'

/** The coalescer's entry for one kernel error record; `bootEpochMs` turns the record's monotonic time into wall time. */
export const kernelErrorEntry = (c: ClassifiedError, corr: Correlation, record: KmsgRecord, bootEpochMs: number): CoalesceInput => {
  // Unattributed records are kept apart from the current binding's own (the coalescing key has the device).
  const device = corr.unattributed !== undefined ? `unattributed${corr.device ? `:${corr.device}` : ''}`
    : corr.device ?? (corr.candidates ? `ambiguous:${corr.candidates.map((x) => x.device).join(',')}` : undefined)
  const fields: KernelErrorData = { source: c.source, rule: corr.rule }
  if (corr.unattributed !== undefined) fields.unattributed = corr.unattributed
  if (corr.backingFile) fields.backingFile = corr.backingFile
  if (corr.object) fields.object = { sha256: corr.object.sha256, path: corr.object.path }
  if (corr.role) fields.role = corr.role
  if (corr.candidates) fields.candidates = corr.candidates.map((x) => ({ device: x.device, ...(x.object ? { object: x.object.sha256 } : {}) }))
  if (c.compressor) fields.compressor = c.compressor
  if (c.errno !== undefined) fields.errno = c.errno
  if (record.dict.SUBSYSTEM) fields.subsystem = record.dict.SUBSYSTEM
  const block = c.blockOffset !== undefined
    ? { offset: c.blockOffset, ...(c.blockSize !== undefined ? { size: c.blockSize } : {}) }
    : c.sector !== undefined ? { offset: c.sector * 512 } : c.logicalBlock !== undefined ? { offset: c.logicalBlock } : undefined
  return {
    kind: c.kind,
    class: c.class,
    ...(device ? { device } : {}),
    seq: record.seq,
    time: new Date(bootEpochMs + record.usec / 1000),
    message: record.message.slice(0, 512),
    ...(corr.image ? { image: corr.image } : {}),
    fields,
    ...(block ? { block } : {}),
  }
}
