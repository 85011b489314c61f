import t from 'tap'
import { decideAtStart, decideOnEvent, drainReason, isDrained, parseNodeLine, parseSlurmMode, slurmNodeName, type ResumeFacts } from '../../agent/daemon/slurm-decide.js'

const SHA = 'fe91bed4ff8c0123456789abcdef0123456789abcdef0123456789abcdef0123'

t.test('the reason names the kind and the first 12 hex digits of the digest, after the boot-agent: prefix', async (t) => {
  t.equal(drainReason('squashfs-error', SHA), 'boot-agent: squashfs-error sha256:fe91bed4ff8c')
  t.equal(drainReason('io-error', undefined), 'boot-agent: io-error image unknown')
})

t.test('scontrol show node -o: state flags and the reason without its [user@time] tail', async (t) => {
  const line = 'NodeName=banode1 Arch=x86_64 CPUTot=1 State=IDLE+DRAIN ThreadsPerCore=1 Partitions=batest Reason=operator: bad DIMM [root@2026-12-07T18:54:10]'
  t.same(parseNodeLine(line), { state: ['IDLE', 'DRAIN'], reason: 'operator: bad DIMM' })
  t.same(parseNodeLine('NodeName=n1 State=IDLE ThreadsPerCore=1'), { state: ['IDLE'] })
  t.equal(parseNodeLine('Node n1 not found'), undefined)
  t.ok(isDrained({ state: ['IDLE', 'DRAIN'] }))
  t.notOk(isDrained({ state: ['IDLE'] }))
})

t.test('drain on the first squashfs-error, io-error or integrity event, and on nothing else', async (t) => {
  for (const kind of ['squashfs-error', 'io-error', 'integrity']) {
    t.match(decideOnEvent('drain', kind, SHA, false, { state: ['IDLE'] }), { action: 'drain', reason: `boot-agent: ${kind} sha256:fe91bed4ff8c` }, kind)
  }
  t.match(decideOnEvent('drain', 'status', SHA, false, { state: ['IDLE'] }), { action: 'none' }, 'a heartbeat does not drain')
  t.match(decideOnEvent('off', 'squashfs-error', SHA, false, { state: ['IDLE'] }), { action: 'none' }, 'off is off')
  t.match(decideOnEvent('drain', 'squashfs-error', SHA, true, { state: ['IDLE'] }), { action: 'none', why: /already drained in this boot/ }, 'once per boot')
  t.match(decideOnEvent('drain', 'squashfs-error', SHA, false, undefined), { action: 'drain' }, 'Slurm state unknown: drain anyway')
})

t.test('an operator\'s drain reason is never overwritten', async (t) => {
  t.match(decideOnEvent('drain+resume', 'squashfs-error', SHA, false, { state: ['IDLE', 'DRAIN'], reason: 'NHC: ib0 down' }), { action: 'none', why: /someone else/ })
  t.match(decideOnEvent('drain+resume', 'squashfs-error', SHA, false, { state: ['DRAIN'] }), { action: 'none', why: /someone else/ }, 'a drain with no reason is not ours either')
})

t.test('resume only our own drain, only in drain+resume, only after a later verified boot with no trouble', async (t) => {
  const ours: ResumeFacts = { mode: 'drain+resume', verifiedBoot: true, drainedInBoot: 'old', bootId: 'new', troubleThisBoot: false, info: { state: ['IDLE', 'DRAIN'], reason: 'boot-agent: io-error sha256:fe91bed4ff8c' } }
  t.match(decideAtStart(ours), { action: 'resume' })
  t.match(decideAtStart({ ...ours, drainedInBoot: undefined }), { action: 'resume' }, 'no record (state dir lost): the prefix says it is ours')
  t.match(decideAtStart({ ...ours, mode: 'drain' }), { action: 'none' }, 'drain mode never resumes')
  t.match(decideAtStart({ ...ours, info: { state: ['IDLE', 'DRAIN'], reason: 'maintenance' } }), { action: 'none', why: /someone else/ })
  t.match(decideAtStart({ ...ours, drainedInBoot: 'new' }), { action: 'none', why: /this very boot/ })
  t.match(decideAtStart({ ...ours, troubleThisBoot: true }), { action: 'none' })
  t.match(decideAtStart({ ...ours, verifiedBoot: false }), { action: 'none', why: /verified/ })
  t.match(decideAtStart({ ...ours, info: { state: ['IDLE'] } }), { action: 'none', why: /not drained/ })
  t.match(decideAtStart({ ...ours, info: undefined }), { action: 'none', why: /unknown/ })
})

t.test('the mode and the node-name pattern are checked at the edge', async (t) => {
  t.equal(parseSlurmMode('drain+resume'), 'drain+resume')
  t.throws(() => parseSlurmMode('yes'), /--slurm: "yes" is not one of off, drain, drain\+resume/)
  t.equal(slurmNodeName('{short}', { node: 'n1', hostname: 'cn042.cluster.example' }), 'cn042')
  t.equal(slurmNodeName('{hostname}', { node: 'n1', hostname: 'cn042.cluster.example' }), 'cn042.cluster.example')
  t.equal(slurmNodeName('x-{node}', { node: 'n1', hostname: 'h' }), 'x-n1')
  t.throws(() => slurmNodeName('a b{node}', { node: 'n1', hostname: 'h' }), /--slurm-node: pattern "a b\{node\}" gives "a bn1", not a Slurm node name/)
})
