// Counters, gauges and latency distributions, exposed two ways: Prometheus text on GET /metrics and a
// compact JSON snapshot for the `<base>/metrics` topic. Percentiles for the snapshot come from our own
// sliding window: prom-client summaries re-sort on every observation and cost more than they tell here.
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { byThreadRole, round2, THREAD_ROLES, ThreadCpuMeter, type ThreadRole } from '../util/index.js';
import { packageVersion } from './package-info.js';

/** Why a frame was not classified: replaced by a newer one, undecodable, or inference failed on it. */
export type DropReason = 'stale' | 'corrupt' | 'inference';
const DROP_REASONS: readonly DropReason[] = ['stale', 'corrupt', 'inference'];

export interface ResultTimings {
  preprocessMs: number;
  inferenceMs: number;
  /** Capture to publish-ready. */
  totalMs: number;
}

/** Nearest-rank percentiles in ms; null while there is no sample. */
export interface Percentiles {
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

export interface MetricsSnapshot {
  ts: string;
  uptimeSec: number;
  /** Results per second of each source since the previous snapshot. */
  fps: Record<string, number>;
  latencyMs: { preprocess: Percentiles; inference: Percentiles; total: Percentiles };
  /** Since start. */
  drops: Record<DropReason, number>;
  /** Since start. */
  captureFailures: number;
  /** Since start: frames motion gating kept from inference. */
  gated: number;
  /** Since start: Results the publish policy did not publish (unchanged, or over the rate cap). */
  suppressed: { unchanged: number; rate: number };
  outbox: { depth: number; dropped: number };
  rssBytes: number;
  heapUsedBytes: number;
  /** Since the previous snapshot; how late the loop ran a timer (its period subtracted). */
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  /**
   * Since the previous snapshot: CPU time of the whole process (every thread: the event loop, sharp's
   * pool, the inference worker and ONNX Runtime's threads; process.cpuUsage) per Result made, and as a
   * percentage of one core. Not split by stage: the per-stage figures above are wall times (preprocess
   * on the main thread awaiting sharp, inference inside the worker). msPerResult is null without Results.
   * `threads` splits it by thread role (util/threads.ts: `main`, `inference`, `other`), from each
   * thread's time in /proc; null where /proc is not available.
   */
  cpu: CpuFigures & { threads: Record<ThreadRole, CpuFigures> | null };
}

/** CPU over a snapshot interval: ms per Result made (null without Results) and % of one core. */
export interface CpuFigures {
  msPerResult: number | null;
  percentOfOneCore: number;
}

/**
 * What the MQTT publisher and its outbox have counted since they started (PublisherStats plus the
 * outbox's write errors and corrupt records): read at each scrape and snapshot, so /metrics is never
 * behind. Counters are mirrored by their increase since the previous reading.
 */
export interface PublishingCounts {
  connected: boolean;
  /** Results in the outbox, not yet acknowledged by the broker, and their bytes. */
  outboxDepth: number;
  outboxBytes: number;
  /** Results dropped by the outbox bounds. */
  dropped: number;
  /** Results older than mqtt.resultExpirySec when their turn came: dropped unsent. */
  expired: number;
  /** Results acknowledged by the broker. */
  published: number;
  /** Other messages (status, metrics, snapshots, responses, discovery) handed to the connection. */
  livePublished: number;
  /** Results the broker refused. */
  failed: number;
  /** Other messages not delivered (not connected, or an error). */
  liveDropped: number;
  /** Successful connections after the first. */
  reconnects: number;
  /** Connection errors (unreachable, TLS, CONNACK refused): one per failed attempt. */
  connectionErrors: number;
  /** Outbox appends the disk refused (held in memory), and records skipped as corrupt. */
  outboxWriteErrors?: number;
  outboxCorrupt?: number;
}

/** The model the engine runs, as `inceptiond_model_info` labels. */
export interface ModelInfo {
  model: string;
  precision: string;
  provider: string;
}

export interface MetricsOptions {
  /** Latency samples kept for percentiles (default 1000). */
  window?: number;
  /** Monotonic clock in ms (default performance.now); tests pass their own. */
  now?: () => number;
  /** Process CPU time (default process.cpuUsage); tests pass their own. */
  cpuUsage?: () => NodeJS.CpuUsage;
  /** CPU seconds by thread role since start, never decreasing (default: a ThreadCpuMeter on /proc). */
  threadCpu?: () => Record<ThreadRole, number> | undefined;
}

/** Ring buffer of the last `capacity` numbers. */
export class SlidingWindow {
  private readonly values: Float64Array;
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    this.values = new Float64Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  push(value: number): void {
    this.values[this.next] = value;
    this.next = (this.next + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
  }

  /** Sorted copy of the samples held. */
  sorted(): Float64Array {
    return this.values.slice(0, this.count).sort();
  }

  percentiles(): Percentiles {
    const sorted = this.sorted();
    return { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99) };
  }
}

/** Nearest-rank percentile: the smallest sample with at least p% of the samples at or below it. */
export function percentile(sorted: ArrayLike<number>, p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

const roundPercentiles = (p: Percentiles): Percentiles => ({
  p50: p.p50 === null ? null : round2(p.p50),
  p90: p.p90 === null ? null : round2(p.p90),
  p99: p.p99 === null ? null : round2(p.p99),
});

// Prometheus wants base units, so latencies are exported in seconds (Grafana formats them); the JSON
// snapshot keeps ms like the Result payload.
const LATENCY_BUCKETS_SEC = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** A frame's latency reaches seconds when a source is slow or the daemon is starved: buckets up to a minute. */
const FRAME_LATENCY_BUCKETS_SEC = [...LATENCY_BUCKETS_SEC, 30, 60];
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
/**
 * The event-loop delay monitor's timer period. Each period wakes the loop: at 10 ms that cost 3.2 ms of
 * CPU per second (0.3 % of a core, a daemon at rest spends a few %); at 50 ms 0.9 ms/s. A stall still
 * shows in full in the sample after it. Node's samples are the time between the timer's runs, so the
 * period itself is subtracted: an idle loop reads 0, not 10 ms.
 */
export const EVENT_LOOP_RESOLUTION_MS = 50;

export class Metrics {
  /** Our own registry, never prom-client's global one, so tests and several instances do not collide. */
  readonly registry = new Registry();

  private readonly now: () => number;
  private readonly startedAt: number;
  private readonly framesCaptured: Counter<'source'>;
  private readonly captureFailures: Counter<'source'>;
  private readonly framesDropped: Counter<'source' | 'reason'>;
  private readonly results: Counter<'source'>;
  private readonly framesGated: Counter<'source'>;
  private readonly resultsSuppressed: Counter<'source' | 'reason'>;
  private readonly requests: Counter<'op' | 'status'>;
  private gatedCount = 0;
  private readonly suppressedCounts = { unchanged: 0, rate: 0 };
  private readonly outboxDroppedTotal: Counter<'reason'>;
  private readonly outboxMessagesGauge: Gauge;
  private readonly outboxBytesGauge: Gauge;
  private readonly outboxWriteFailuresTotal: Counter;
  private readonly outboxCorruptTotal: Counter;
  private readonly mqttConnectedGauge: Gauge;
  private readonly mqttPublished: Counter<'kind'>;
  private readonly mqttPublishFailures: Counter<'kind'>;
  private readonly mqttReconnects: Counter;
  private readonly mqttConnectionErrors: Counter;
  private readonly modelInfo: Gauge<'model' | 'precision' | 'provider'>;
  /** Per frame: the two stages, and the whole (capture to Result: `inceptiond_frame_latency_seconds`). */
  private readonly latency: Record<'preprocess' | 'inference' | 'total', { histogram: Histogram; window: SlidingWindow }>;
  private readonly eventLoop: IntervalHistogram;
  private readonly cpuUsage: () => NodeJS.CpuUsage;
  private readonly threadCpu: () => Record<ThreadRole, number> | undefined;
  /** Process CPU ms, CPU seconds by thread role and Results at the start of the snapshot interval. */
  private intervalCpu: { ms: number; threads: Record<ThreadRole, number> | undefined; results: number };
  private resultTotal = 0;
  private readPublishing: (() => PublishingCounts) | undefined;
  /** The previous reading of the publisher's counters, for the increases. */
  private publishing: Omit<PublishingCounts, 'connected' | 'outboxDepth' | 'outboxBytes'> = {
    dropped: 0,
    expired: 0,
    published: 0,
    livePublished: 0,
    failed: 0,
    liveDropped: 0,
    reconnects: 0,
    connectionErrors: 0,
    outboxWriteErrors: 0,
    outboxCorrupt: 0,
  };

  private readonly dropCounts: Record<DropReason, number> = { stale: 0, corrupt: 0, inference: 0 };
  private captureFailureCount = 0;
  private outboxDepth = 0;
  private outboxDropped = 0;
  private intervalStart: number;
  private readonly intervalResults = new Map<string, number>();

  constructor(options: MetricsOptions = {}) {
    const window = options.window ?? 1000;
    this.now = options.now ?? (() => performance.now());
    this.cpuUsage = options.cpuUsage ?? (() => process.cpuUsage());
    if (options.threadCpu) {
      this.threadCpu = options.threadCpu;
    } else {
      const meter = new ThreadCpuMeter();
      this.threadCpu = () => meter.sample();
    }
    this.intervalCpu = { ms: cpuMs(this.cpuUsage()), threads: this.threadCpu(), results: 0 };
    this.startedAt = this.now();
    this.intervalStart = this.startedAt;
    const registers = [this.registry];

    // The standard names (process_cpu_seconds_total, process_resident_memory_bytes,
    // nodejs_heap_size_used_bytes, …), no prefix: the dashboards and alerts written for them work as they are.
    // prom-client's own event-loop-lag histogram samples every 10 ms by default: the same wake-ups the
    // daemon's monitor avoids, so it gets the same period.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_RESOLUTION_MS });
    new Gauge({ name: 'inceptiond_build_info', help: 'Always 1; the version is a label', labelNames: ['version'], registers }).set(
      { version: packageVersion },
      1,
    );

    this.framesCaptured = new Counter({
      name: 'inceptiond_frames_captured_total',
      help: 'Frames captured',
      labelNames: ['source'],
      registers,
    });
    this.captureFailures = new Counter({
      name: 'inceptiond_capture_failures_total',
      help: 'Captures that failed',
      labelNames: ['source'],
      registers,
    });
    this.framesDropped = new Counter({
      name: 'inceptiond_frames_dropped_total',
      help: 'Frames not classified: stale (a newer frame replaced it), corrupt (undecodable), inference (the model failed on it)',
      labelNames: ['source', 'reason'],
      registers,
    });
    this.results = new Counter({ name: 'inceptiond_results_total', help: 'Results produced', labelNames: ['source'], registers });
    this.framesGated = new Counter({
      name: 'inceptiond_frames_gated_total',
      help: 'Frames not inferred because they stayed like the last inferred one (motion gating)',
      labelNames: ['source'],
      registers,
    });
    this.resultsSuppressed = new Counter({
      name: 'inceptiond_results_suppressed_total',
      help: 'Results not published by the publish policy: unchanged, or over the rate cap',
      labelNames: ['source', 'reason'],
      registers,
    });
    this.requests = new Counter({
      name: 'inceptiond_control_requests_total',
      help: 'Requests answered on <base>/response/<op>, by operation and status (ok, error)',
      labelNames: ['op', 'status'],
      registers,
    });
    this.outboxDroppedTotal = new Counter({
      name: 'inceptiond_outbox_dropped_total',
      help: 'Results dropped undelivered: limit (the outbox bounds: messages, bytes, age), expired (older than mqtt.resultExpirySec when their turn came)',
      labelNames: ['reason'],
      registers,
    });
    this.outboxWriteFailuresTotal = new Counter({
      name: 'inceptiond_outbox_write_failures_total',
      help: 'Results the outbox could not write to the disk when they were made (held in memory and retried)',
      registers,
    });
    this.outboxCorruptTotal = new Counter({
      name: 'inceptiond_outbox_corrupt_records_total',
      help: 'Outbox records skipped because their checksum or content was wrong (torn by a crash, damaged on the card)',
      registers,
    });
    this.outboxMessagesGauge = new Gauge({
      name: 'inceptiond_outbox_messages',
      help: "Results in the outbox waiting for the broker's acknowledgement",
      registers,
    });
    this.outboxBytesGauge = new Gauge({ name: 'inceptiond_outbox_bytes', help: 'Bytes of the Results in the outbox', registers });
    this.mqttConnectedGauge = new Gauge({ name: 'inceptiond_mqtt_connected', help: '1 while connected to the broker', registers });
    this.mqttPublished = new Counter({
      name: 'inceptiond_mqtt_messages_published_total',
      help: 'MQTT messages published: result (Results the broker acknowledged), other (status, metrics, snapshots, responses, discovery)',
      labelNames: ['kind'],
      registers,
    });
    this.mqttPublishFailures = new Counter({
      name: 'inceptiond_mqtt_publish_failures_total',
      help: 'MQTT messages not published: result (Results the broker refused; dropped), other (not connected, or an error; not retried)',
      labelNames: ['kind'],
      registers,
    });
    this.mqttReconnects = new Counter({
      name: 'inceptiond_mqtt_reconnects_total',
      help: 'Connections to the broker after the first one',
      registers,
    });
    this.mqttConnectionErrors = new Counter({
      name: 'inceptiond_mqtt_connection_errors_total',
      help: 'Connection errors: broker unreachable, TLS handshake or CONNACK refused, protocol errors (one per failed attempt)',
      registers,
    });
    for (const kind of ['result', 'other']) {
      this.mqttPublished.inc({ kind }, 0);
      this.mqttPublishFailures.inc({ kind }, 0);
    }
    for (const reason of ['limit', 'expired']) this.outboxDroppedTotal.inc({ reason }, 0);
    this.modelInfo = new Gauge({
      name: 'inceptiond_model_info',
      help: 'Always 1; the model the engine runs, its precision and its first execution provider are labels',
      labelNames: ['model', 'precision', 'provider'],
      registers,
    });

    const latency = (name: string, help: string, buckets: number[]) => ({
      histogram: new Histogram({ name, help, buckets, registers }),
      window: new SlidingWindow(window),
    });
    // CPU per Result is a query, not a metric: rate(process_cpu_seconds_total[5m]) / rate(inceptiond_results_total[5m]),
    // and by thread role from this counter (README, "Health, metrics and logs", has the query).
    const threadCpu = this.threadCpu;
    const exported: Record<ThreadRole, number> = { main: 0, inference: 0, other: 0 };
    new Counter({
      name: 'inceptiond_thread_cpu_seconds_total',
      help: 'CPU time by thread role: main (the event loop), inference (the worker and ONNX Runtime), other (decoding, I/O, V8)',
      labelNames: ['thread'],
      registers,
      // Read at each scrape; absent where /proc is not available.
      collect() {
        const now = threadCpu();
        if (!now) return;
        for (const role of THREAD_ROLES) {
          this.inc({ thread: role }, Math.max(0, now[role] - exported[role]));
          exported[role] = Math.max(exported[role], now[role]);
        }
      },
    });
    this.latency = {
      preprocess: latency('inceptiond_preprocess_duration_seconds', 'Decode, resize and normalise time per frame', LATENCY_BUCKETS_SEC),
      inference: latency('inceptiond_inference_duration_seconds', 'session.run time per frame', LATENCY_BUCKETS_SEC),
      total: latency(
        'inceptiond_frame_latency_seconds',
        "A frame's latency: capture time (the source's clock) to its Result",
        FRAME_LATENCY_BUCKETS_SEC,
      ),
    };

    this.eventLoop = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
    this.eventLoop.enable();
  }

  frameCaptured(source: string): void {
    this.framesCaptured.inc({ source });
  }

  captureFailed(source: string): void {
    this.captureFailures.inc({ source });
    this.captureFailureCount++;
  }

  frameDropped(source: string, reason: DropReason, count = 1): void {
    this.framesDropped.inc({ source, reason }, count);
    this.dropCounts[reason] += count;
  }

  frameGated(source: string): void {
    this.framesGated.inc({ source });
    this.gatedCount++;
  }

  resultSuppressed(source: string, reason: 'unchanged' | 'rate'): void {
    this.resultsSuppressed.inc({ source, reason });
    this.suppressedCounts[reason]++;
  }

  /** `op` is the request's operation, or "unknown" for one the daemon does not have (a bounded label set). */
  requestAnswered(op: string, ok: boolean): void {
    this.requests.inc({ op, status: ok ? 'ok' : 'error' });
  }

  recordResult(source: string, timings: ResultTimings): void {
    this.results.inc({ source });
    this.resultTotal++;
    this.intervalResults.set(source, (this.intervalResults.get(source) ?? 0) + 1);
    this.observe('preprocess', timings.preprocessMs);
    this.observe('inference', timings.inferenceMs);
    this.observe('total', timings.totalMs);
  }

  setOutboxDepth(depth: number, bytes?: number): void {
    this.outboxDepth = depth;
    this.outboxMessagesGauge.set(depth);
    if (bytes !== undefined) this.outboxBytesGauge.set(bytes);
  }

  /** Results dropped undelivered: by the outbox bounds (limit; the snapshot's `outbox.dropped`) or for their age (expired). */
  outboxDroppedMessages(count = 1, reason: 'limit' | 'expired' = 'limit'): void {
    if (reason === 'limit') this.outboxDropped += count;
    this.outboxDroppedTotal.inc({ reason }, count);
  }

  outboxWriteFailures(count = 1): void {
    this.outboxWriteFailuresTotal.inc(count);
  }

  outboxCorruptRecords(count = 1): void {
    this.outboxCorruptTotal.inc(count);
  }

  setMqttConnected(connected: boolean): void {
    this.mqttConnectedGauge.set(connected ? 1 : 0);
  }

  /** The model the engine runs: `inceptiond_model_info{model,precision,provider} 1`. */
  setModelInfo(info: ModelInfo): void {
    this.modelInfo.reset();
    this.modelInfo.set({ model: info.model, precision: info.precision, provider: info.provider }, 1);
  }

  /** Where the publisher's counts are read, at every scrape and snapshot (see PublishingCounts). */
  trackPublishing(read: () => PublishingCounts): void {
    this.readPublishing = read;
    this.syncPublishing();
  }

  /** Mirrors one reading of the publisher's counts: the gauges as they are, the counters by their increase. */
  observePublishing(counts: PublishingCounts): void {
    this.setOutboxDepth(counts.outboxDepth, counts.outboxBytes);
    this.setMqttConnected(counts.connected);
    const prev = this.publishing;
    // A count lower than the previous reading (a new publisher) starts over from it.
    const increase = (key: keyof Metrics['publishing']) => {
      const now = counts[key] ?? 0;
      const before = prev[key] ?? 0;
      prev[key] = now;
      return now >= before ? now - before : now;
    };
    const add = (counter: Counter<string>, labels: Record<string, string>, n: number) => n > 0 && counter.inc(labels, n);
    const dropped = increase('dropped');
    if (dropped > 0) this.outboxDroppedMessages(dropped, 'limit');
    const expired = increase('expired');
    if (expired > 0) this.outboxDroppedMessages(expired, 'expired');
    add(this.mqttPublished, { kind: 'result' }, increase('published'));
    add(this.mqttPublished, { kind: 'other' }, increase('livePublished'));
    add(this.mqttPublishFailures, { kind: 'result' }, increase('failed'));
    add(this.mqttPublishFailures, { kind: 'other' }, increase('liveDropped'));
    add(this.mqttReconnects, {}, increase('reconnects'));
    add(this.mqttConnectionErrors, {}, increase('connectionErrors'));
    add(this.outboxWriteFailuresTotal, {}, increase('outboxWriteErrors'));
    add(this.outboxCorruptTotal, {}, increase('outboxCorrupt'));
  }

  /**
   * The JSON for `<base>/metrics`. Ends the current interval: fps and event-loop delay cover the time
   * since the previous call, so call it from one place (the metrics timer); peek() reads without that.
   */
  snapshot(): MetricsSnapshot {
    const cpu = { ms: cpuMs(this.cpuUsage()), threads: this.threadCpu() };
    const snap = this.snapshotWith(cpu);
    this.intervalStart = this.now();
    for (const source of this.intervalResults.keys()) this.intervalResults.set(source, 0);
    this.eventLoop.reset();
    // The next interval starts from the readings this one ended with: /proc is read once per snapshot.
    this.intervalCpu = { ...cpu, results: this.resultTotal };
    return snap;
  }

  /** As snapshot(), without starting a new interval (for /status and on-demand requests). */
  peek(): MetricsSnapshot {
    return this.snapshotWith({ ms: cpuMs(this.cpuUsage()), threads: this.threadCpu() });
  }

  /** The snapshot's figures, with the CPU readings (process ms, seconds by thread role) taken now. */
  private snapshotWith(cpu: { ms: number; threads: Record<ThreadRole, number> | undefined }): MetricsSnapshot {
    this.syncPublishing();
    const now = this.now();
    const elapsedSec = (now - this.intervalStart) / 1000;
    const fps: Record<string, number> = {};
    for (const [source, count] of this.intervalResults) fps[source] = elapsedSec > 0 ? round2(count / elapsedSec) : 0;
    const memory = process.memoryUsage();
    const loop = this.eventLoop;
    const hasLoopSamples = loop.count > 0;
    const delayMs = (ns: number) => round2(Math.max(0, ns / 1e6 - EVENT_LOOP_RESOLUTION_MS));
    const cpuSpent = cpu.ms - this.intervalCpu.ms;
    const intervalResults = this.resultTotal - this.intervalCpu.results;
    const figures = (ms: number): CpuFigures => ({
      msPerResult: intervalResults > 0 ? round2(ms / intervalResults) : null,
      percentOfOneCore: elapsedSec > 0 ? round2(ms / 10 / elapsedSec) : 0,
    });
    const threadsNow = cpu.threads;
    const threadsBefore = this.intervalCpu.threads;
    return {
      ts: new Date().toISOString(),
      uptimeSec: Math.round((now - this.startedAt) / 1000),
      fps,
      latencyMs: {
        preprocess: roundPercentiles(this.latency.preprocess.window.percentiles()),
        inference: roundPercentiles(this.latency.inference.window.percentiles()),
        total: roundPercentiles(this.latency.total.window.percentiles()),
      },
      drops: Object.fromEntries(DROP_REASONS.map((r) => [r, this.dropCounts[r]])) as Record<DropReason, number>,
      captureFailures: this.captureFailureCount,
      gated: this.gatedCount,
      suppressed: { ...this.suppressedCounts },
      outbox: { depth: this.outboxDepth, dropped: this.outboxDropped },
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      eventLoopDelayMs: {
        p50: hasLoopSamples ? delayMs(loop.percentile(50)) : 0,
        p99: hasLoopSamples ? delayMs(loop.percentile(99)) : 0,
        max: hasLoopSamples ? delayMs(loop.max) : 0,
      },
      cpu: {
        ...figures(cpuSpent),
        threads: threadsNow && threadsBefore ? byThreadRole((role) => figures((threadsNow[role] - threadsBefore[role]) * 1000)) : null,
      },
    };
  }

  /** Prometheus text exposition. */
  prometheus(): Promise<string> {
    this.syncPublishing();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.eventLoop.disable();
  }

  private syncPublishing(): void {
    if (this.readPublishing) this.observePublishing(this.readPublishing());
  }

  private observe(stage: keyof Metrics['latency'], ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    this.latency[stage].histogram.observe(ms / 1000);
    this.latency[stage].window.push(ms);
  }
}
