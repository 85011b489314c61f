/**
 * The head node's `GET /metrics` for Prometheus, with prom-client: how many
 * nodes run each image digest, which image names are inconsistent, the
 * events stored by kind, and request latencies by route. The node views and
 * the consistency view are read at scrape time (what the head answers on
 * /v1/consistency at that moment); the counters and the histogram are kept
 * as requests and events pass.
 *
 * Metric names, help and labels are listed in docs/operations.md.
 */
import type { ServerResponse } from 'node:http'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ConsistencyView } from './consistency.js'
import { type NodeView, runningImage } from './node-state.js'

/** Where a scrape reads the head's state. */
export interface HeadMetricsSources {
  nodes(): NodeView[]
  consistency(): Promise<ConsistencyView>
}

/** Latency buckets (seconds): a descriptor answers in about a millisecond, an image stream may take minutes. */
export const LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120]

export class HeadMetrics {
  readonly registry = new Registry()
  private readonly eventsTotal: Counter<'kind'>
  private readonly latency: Histogram<'route' | 'method' | 'code'>

  private readonly nodes: Gauge<'sha256' | 'name'>
  private readonly inconsistent: Gauge
  private readonly perName: Gauge<'name'>

  constructor(private readonly src: HeadMetricsSources) {
    const registers = [this.registry]
    this.nodes = new Gauge({
      name: 'boot_agent_head_nodes',
      help: 'Nodes running each image digest now (their last status heartbeat or last successful boot)',
      labelNames: ['sha256', 'name'],
      registers,
    })
    this.inconsistent = new Gauge({
      name: 'boot_agent_head_inconsistent_names',
      help: 'Image names with at least one consistency flag (mixed digests, unpublished digest, served bytes differ, store object modified)',
      registers,
    })
    this.perName = new Gauge({
      name: 'boot_agent_head_image_consistent',
      help: 'Whether every node runs the current digest of this image name with no integrity flag (1) or not (0)',
      labelNames: ['name'],
      registers,
    })
    this.eventsTotal = new Counter({
      name: 'boot_agent_head_events_total',
      help: 'Node events stored by the head, by kind (those in the event store at start, then each one ingested)',
      labelNames: ['kind'],
      registers,
    })
    this.latency = new Histogram({
      name: 'boot_agent_head_request_duration_seconds',
      help: 'Time from a request arriving to its answer being handed to the socket, by route, method and status code',
      labelNames: ['route', 'method', 'code'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    })
  }

  /** One stored event. */
  countEvent(kind: string): void {
    this.eventsTotal.inc({ kind })
  }

  /** One answered request; `route` is the route table's name, `none` when no route matched. */
  observeRequest(route: string, method: string, code: number, seconds: number): void {
    this.latency.observe({ route, method, code: String(code) }, seconds)
  }

  /** Sets the gauges from the head's state now (one consistency view per scrape). */
  async refresh(): Promise<void> {
    this.nodes.reset()
    for (const v of this.src.nodes()) {
      const img = runningImage(v)
      this.nodes.inc({ sha256: img?.sha256 ?? 'none', name: img?.name ?? '' }, 1)
    }
    const view = await this.src.consistency()
    this.inconsistent.set(view.inconsistent.length)
    this.perName.reset()
    for (const img of view.images) this.perName.set({ name: img.name }, img.consistent ? 1 : 0)
  }

  /** Answers a scrape (`head`: headers only). Returns the body bytes sent. */
  async send(res: ServerResponse, head: boolean): Promise<number> {
    await this.refresh()
    const body = await this.registry.metrics()
    res.writeHead(200, { 'content-type': this.registry.contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
    res.end(head ? undefined : body)
    return head ? 0 : Buffer.byteLength(body)
  }
}
