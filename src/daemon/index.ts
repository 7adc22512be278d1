// The daemon: wires capture → vision → inference → classify → outbox → MQTT, plus health, metrics and
// systemd notify. Owns start and stop; everything below it is reusable on its own.
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import sharp from 'sharp';
import type { Config, SourceConfig } from '../config/index.js';
import { readSecretFile } from '../config/index.js';
import { CaptureRunner, createSource, SourceExhaustedError, type Frame, type SourceHealth } from '../capture/index.js';
import { createPreprocessor, FrameDecodeError, FrameTooLargeError, type Preprocessor } from '../vision/index.js';
import { formatPlacement, InferenceEngine, topLabels } from '../inference/index.js';
import {
  MqttPublisher,
  Outbox,
  SeqStore,
  startEmbeddedBroker,
  topicsFor,
  type ResultPayload,
  type Topics,
} from '../publish/index.js';
import { createNotifier, lockStateDir, Metrics, packageVersion, startHttpServer, type Notifier } from '../ops/index.js';
import { prepareModelIsolated, sessionSettingsFor, targetForProvider, type PreparedModel } from './model-setup.js';
import { toSourceOptions } from '../source-options.js';

/** Start-up time asked of systemd per model build/quantization step (a Pi Zero-class board is the worst case). */
const MODEL_SETUP_TIMEOUT_MS = 15 * 60_000;

type DaemonState = 'starting' | 'online' | 'degraded' | 'offline';

interface SourcePipeline {
  id: string;
  runner: CaptureRunner;
  health: SourceHealth;
  done?: Promise<void>;
  /** Last time the loop made progress (a frame, or a handled failure); the watchdog reads it. */
  lastActivity: number;
}

export interface DaemonInfo {
  state: DaemonState;
  model: PreparedModel;
  provider: string;
  baseTopic: string;
  brokerUrl: string;
  httpPort?: number;
}

/** The rate-limited "one line per outage" log for repeated per-frame problems. */
class LogThrottle {
  private last = new Map<string, number>();
  constructor(private readonly intervalMs: number) {}
  shouldLog(key: string): boolean {
    const now = Date.now();
    const prev = this.last.get(key);
    if (prev !== undefined && now - prev < this.intervalMs) return false;
    this.last.set(key, now);
    return true;
  }
}

/**
 * An accelerator that leaves nodes to the CPU pays two copies per crossing on every run; say so, with
 * the one case we know the cure for (WebGPU has no QuantizeLinear kernel: an INT8 QDQ model bounces
 * every quantized tensor through the CPU and runs slower than FP32 there).
 */
function warnAboutSplitGraph(engine: InferenceEngine, model: PreparedModel, logger: Logger): void {
  const placement = engine.info.placement;
  if (!placement || engine.provider === 'cpu' || !placement.nodes.cpu) return;
  const hint =
    engine.provider === 'webgpu' && model.precision === 'int8'
      ? ': WebGPU has no QuantizeLinear kernel, so an INT8 model runs faster as FP32 there (model.precision fp32)'
      : ': set inference.cpuFallback false to refuse a split graph and use the next provider listed';
  logger.warn(
    { provider: engine.provider, placement },
    `${engine.provider} left ${placement.nodes.cpu} of ${Object.values(placement.nodes).reduce((a, b) => a + b, 0)} nodes to the CPU (${formatPlacement(placement)})${hint}`,
  );
}

/** An INT8 model shaped for another provider runs, but slower or partly on the CPU: say which to make. */
function warnAboutQuantizationTarget(engine: InferenceEngine, model: PreparedModel, logger: Logger): void {
  const made = model.manifest.quantization?.target;
  const wanted = targetForProvider(engine.provider);
  if (!made || made === wanted || (made === 'cpu-arm' && wanted === 'cpu')) return;
  logger.warn(
    { provider: engine.provider, quantizedFor: made, suggested: wanted },
    `this INT8 model was quantized for ${made}, but runs on ${engine.provider}: \`inceptiond model quantize FP32 OUT --target ${wanted}\` shapes one for it`,
  );
}

export class Daemon {
  private readonly abort = new AbortController();
  private readonly pipelines: SourcePipeline[] = [];
  private readonly throttle = new LogThrottle(60_000);
  private state: DaemonState = 'starting';
  private since = new Date();
  private engineError?: string;
  private stopping?: Promise<void>;
  private metricsTimer?: NodeJS.Timeout;
  private gaugeTimer?: NodeJS.Timeout;
  private reportedOutboxDrops = 0;
  private closers: Array<{ name: string; close: () => Promise<void> | void }> = [];
  /** Results handed to the outbox since start (bench and tests read it). */
  resultCount = 0;
  private resultWaiters: Array<{ count: number; resolve: () => void }> = [];

  private constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly model: PreparedModel,
    private readonly engine: InferenceEngine,
    private readonly preprocess: Preprocessor,
    private readonly metrics: Metrics,
    private readonly topics: Topics,
    private readonly publisher: MqttPublisher,
    private readonly seq: SeqStore,
    private readonly notifier: Notifier,
    private readonly brokerUrl: string,
    private httpPort?: number,
  ) {}

  /** Starts everything; resolves once frames are flowing (or being retried) and MQTT is connecting. */
  static async start(config: Config, logger: Logger): Promise<Daemon> {
    const closers: Daemon['closers'] = [];
    const cleanup = async () => {
      for (const c of closers.reverse()) await Promise.resolve(c.close()).catch(() => undefined);
    };
    try {
      await mkdir(config.stateDir, { recursive: true });
      const lock = await lockStateDir(config.stateDir);
      closers.push({ name: 'state lock', close: () => lock.release() });
      // sharp's decoded-image cache (50 MB by default) buys nothing for a stream of new frames.
      sharp.cache(false);
      const notifier = createNotifier({ logger });
      const metrics = new Metrics();
      closers.push({ name: 'metrics', close: () => metrics.close() });

      // Building or quantizing the model (first start only) can take minutes on a small board.
      const model = await prepareModelIsolated(config, logger, {
        onStatus: (status) => void notifier.status(status, { extendTimeoutMs: MODEL_SETUP_TIMEOUT_MS }),
      });
      // Mesa (a GPU's Vulkan driver, or lavapipe) compiles WebGPU's shaders on the first run: 5 s in
      // software, 0.9 s with its cache. Keep that cache with ours unless the environment says otherwise.
      process.env.MESA_SHADER_CACHE_DIR ??= path.join(config.stateDir, 'cache', 'mesa');
      // Saved optimized graphs (CPU) and compiled accelerator graphs (EP context) make a restart's
      // first Result come sooner: the optimizer or the NPU compiler is most of the load.
      const engine = await InferenceEngine.create(
        {
          ...sessionSettingsFor(config, model),
          optimizedModelCacheDir: path.join(config.stateDir, 'cache', 'ort'),
          ...(config.inference.epContextCache ? { epContextCacheDir: path.join(config.stateDir, 'cache', 'ep') } : {}),
        },
        logger,
      );
      closers.push({ name: 'inference', close: () => engine.close() });
      warnAboutSplitGraph(engine, model, logger);
      warnAboutQuantizationTarget(engine, model, logger);
      logger.info(
        {
          model: model.manifest.name,
          precision: model.precision,
          provider: engine.provider,
          attempts: engine.attempts,
          synthetic: model.synthetic || undefined,
        },
        model.synthetic
          ? 'model loaded (synthetic weights: labels are meaningless)'
          : 'model loaded',
      );
      const preprocess = createPreprocessor(model.manifest.input);

      let brokerUrl = config.mqtt.url;
      if (config.mqtt.embeddedBroker.enabled) {
        const embedded = await startEmbeddedBroker({
          host: config.mqtt.embeddedBroker.host,
          port: config.mqtt.embeddedBroker.port,
          logger,
        });
        if (embedded) {
          closers.push({ name: 'embedded broker', close: () => embedded.close() });
          brokerUrl = embedded.url;
          logger.info({ url: embedded.url }, 'embedded MQTT broker listening');
        } else {
          logger.info(
            { port: config.mqtt.embeddedBroker.port },
            'a broker already listens on the embedded broker port: publishing to it',
          );
        }
      }

      const topics = topicsFor(config.mqtt.baseTopic);
      const outbox = await Outbox.open(
        path.join(config.stateDir, 'outbox'),
        {
          maxMessages: config.outbox.maxMessages,
          maxBytes: config.outbox.maxBytes,
          maxAgeSec: config.outbox.maxAgeSec,
          fsyncIntervalMs: config.outbox.fsyncIntervalMs,
        },
        logger,
      );
      closers.push({ name: 'outbox', close: () => outbox.close() });
      const seq = await SeqStore.open(config.stateDir, outbox);
      closers.push({ name: 'seq', close: () => seq.close() });

      const daemonRef: { current?: Daemon } = {};
      const publisher = new MqttPublisher(
        {
          url: brokerUrl,
          clientId: config.mqtt.clientId,
          protocolVersion: config.mqtt.protocolVersion,
          username: config.mqtt.username || undefined,
          password: config.mqtt.passwordFile ? await readSecretFile(config.mqtt.passwordFile, 'mqtt.passwordFile') : undefined,
          ca: config.mqtt.ca ? await readFile(config.mqtt.ca) : undefined,
          cert: config.mqtt.cert ? await readFile(config.mqtt.cert) : undefined,
          key: config.mqtt.key ? await readFile(config.mqtt.key) : undefined,
          rejectUnauthorized: config.mqtt.rejectUnauthorized,
          keepaliveSec: config.mqtt.keepaliveSec,
          qos: config.mqtt.qos,
          baseTopic: config.mqtt.baseTopic,
          outbox,
          statusPayload: () => daemonRef.current?.statusPayload() ?? { state: 'online' },
        },
        logger,
      );

      const daemon = new Daemon(
        config, logger, model, engine, preprocess, metrics, topics, publisher, seq, notifier, brokerUrl,
      );
      daemonRef.current = daemon;
      daemon.closers = closers;
      daemon.registerRequests();
      await publisher.start();
      closers.push({ name: 'mqtt', close: () => publisher.stop(5_000) });

      if (config.http.enabled) {
        const http = await startHttpServer({
          host: config.http.host,
          port: config.http.port,
          logger,
          metrics,
          health: () => daemon.healthReport(),
          status: () => daemon.statusPayload(),
        });
        closers.push({ name: 'http', close: () => http.close() });
        daemon.httpPort = http.port;
      }

      for (const source of config.sources) daemon.startSource(source);
      daemon.setState();

      // The publisher owns the outbox and the connection; mirror them into the gauges once a second.
      daemon.gaugeTimer = setInterval(() => daemon.syncPublisherGauges(), 1_000);
      daemon.gaugeTimer.unref();
      if (config.metrics.intervalSec > 0) {
        daemon.metricsTimer = setInterval(() => daemon.publishMetrics(), config.metrics.intervalSec * 1000);
        daemon.metricsTimer.unref();
      }
      notifier.ready(`publishing to ${brokerUrl} as ${config.mqtt.baseTopic}`);
      notifier.startWatchdog(() => daemon.isHealthy());
      return daemon;
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  get info(): DaemonInfo {
    return {
      state: this.state,
      model: this.model,
      provider: this.engine.provider,
      baseTopic: this.config.mqtt.baseTopic,
      brokerUrl: this.brokerUrl,
      httpPort: this.httpPort,
    };
  }

  statusPayload() {
    const sources: Record<string, { state: string; error?: string; since: string }> = {};
    for (const p of this.pipelines) {
      sources[p.id] = { state: p.health.state, error: p.health.error, since: p.health.since.toISOString() };
    }
    const error = this.currentError();
    return {
      state: this.state === 'starting' ? 'online' : this.state,
      version: packageVersion,
      model: { name: this.model.manifest.name, precision: this.model.precision, synthetic: this.model.synthetic || undefined },
      provider: this.engine.provider,
      since: this.since.toISOString(),
      ...(error ? { error } : {}),
      sources,
    };
  }

  private currentError(): string | undefined {
    const failing = this.pipelines.filter((p) => p.health.state === 'failing');
    if (failing.length > 0) return failing.map((p) => `${p.id}: ${p.health.error ?? 'failing'}`).join('; ');
    return this.engineError;
  }

  private setState(): void {
    if (this.state === 'offline') return;
    const next: DaemonState = this.currentError() ? 'degraded' : 'online';
    if (next !== this.state) {
      this.state = next;
      this.since = new Date();
      this.logger.info({ state: next, error: this.currentError() }, 'state');
      this.notifier.status(next === 'online' ? 'online' : `degraded: ${this.currentError()}`);
    }
    this.publisher.setStatus(this.statusPayload());
  }

  healthReport() {
    return {
      healthy: this.state === 'online',
      state: this.state,
      error: this.currentError(),
      mqttConnected: this.publisher.stats().connected,
    };
  }

  /** The watchdog's question: is every source loop still turning (frames or handled failures)? */
  isHealthy(): boolean {
    const limit = Math.max(120_000, this.config.capture.retryMaxMs * 3 + this.config.capture.intervalMs * 3);
    const now = performance.now();
    return this.pipelines.every((p) => p.done === undefined || now - p.lastActivity < limit);
  }

  /** Resolves once `count` Results have been handed to the outbox since start. */
  waitForResults(count: number): Promise<void> {
    if (this.resultCount >= count) return Promise.resolve();
    return new Promise((resolve) => this.resultWaiters.push({ count, resolve }));
  }

  metricsPeek() {
    return this.metrics.peek();
  }

  private registerRequests(): void {
    this.publisher.onRequest('status', () => this.statusPayload());
    // peek, not snapshot: a request must not reset the interval the metrics timer reports on.
    this.publisher.onRequest('metrics', () => {
      this.syncPublisherGauges();
      return this.metrics.peek();
    });
  }

  private syncPublisherGauges(): void {
    const stats = this.publisher.stats();
    this.metrics.setOutboxDepth(stats.outboxDepth);
    this.metrics.setMqttConnected(stats.connected);
    if (stats.dropped > this.reportedOutboxDrops) {
      this.metrics.outboxDroppedMessages(stats.dropped - this.reportedOutboxDrops);
      this.reportedOutboxDrops = stats.dropped;
    }
  }

  private publishMetrics(): void {
    this.syncPublisherGauges();
    const snapshot = { ...this.metrics.snapshot(), outbox: this.publisher.stats() };
    this.publisher.publishNow(this.topics.metrics, JSON.stringify(snapshot), { qos: 0, retain: false });
  }

  private startSource(sourceConfig: SourceConfig): void {
    const source = createSource(toSourceOptions(sourceConfig, this.config), this.logger);
    const runner = new CaptureRunner(source, {
      intervalMs: sourceConfig.intervalMs,
      retryInitialMs: this.config.capture.retryInitialMs,
      retryMaxMs: this.config.capture.retryMaxMs,
      logger: this.logger.child({ source: sourceConfig.id }),
    });
    const pipeline: SourcePipeline = {
      id: sourceConfig.id,
      runner,
      health: { state: 'ok', failures: 0, since: new Date() },
      lastActivity: performance.now(),
    };
    runner.on('health', (health: SourceHealth) => {
      pipeline.health = health;
      pipeline.lastActivity = performance.now();
      if (health.state === 'failing') {
        this.metrics.captureFailed(pipeline.id);
        this.logger.warn({ source: pipeline.id, error: health.error, failures: health.failures }, 'capture failing');
      } else {
        this.logger.info({ source: pipeline.id }, 'capture recovered');
      }
      this.setState();
    });
    runner.on('corrupt', (err) => this.frameSkippedAsCorrupt(pipeline, err));
    this.pipelines.push(pipeline);
    pipeline.done = this.runPipeline(pipeline).catch((err: unknown) => {
      this.logger.error({ err, source: pipeline.id }, 'source pipeline stopped by an unexpected error');
      pipeline.health = { state: 'failing', error: (err as Error).message, failures: 1, since: new Date() };
      this.setState();
    });
  }

  /** A source that cannot start (e.g. its temp folder is unwritable) is retried like a failing capture. */
  private async startWithRetry(pipeline: SourcePipeline): Promise<boolean> {
    const { retryInitialMs, retryMaxMs } = this.config.capture;
    for (let failures = 0; !this.abort.signal.aborted; ) {
      try {
        await pipeline.runner.start();
        if (failures > 0) {
          pipeline.health = { state: 'ok', failures: 0, since: new Date() };
          this.logger.info({ source: pipeline.id }, 'source started');
          this.setState();
        }
        return true;
      } catch (err) {
        failures += 1;
        const error = (err as Error).message;
        pipeline.health = { state: 'failing', error, failures, since: pipeline.health.since };
        pipeline.lastActivity = performance.now();
        this.logger.warn({ source: pipeline.id, error, failures }, 'source cannot start; retrying');
        this.setState();
        const delay = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(failures - 1, 30));
        await sleep(delay, undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
    return false;
  }

  private frameSkippedAsCorrupt(pipeline: SourcePipeline, err: Error): void {
    this.metrics.frameDropped(pipeline.id, 'corrupt');
    if (this.throttle.shouldLog(`corrupt:${pipeline.id}`)) {
      this.logger.warn(
        { source: pipeline.id, err: err.message },
        'frame skipped: not a decodable image (counted in frames_dropped_total{reason="corrupt"}; logged once a minute)',
      );
    }
  }

  /**
   * One source: capture and preprocess frame N+1 while frame N is being inferred; at most one inference
   * in flight per source, so a slow model makes the source skip frames instead of queueing them.
   */
  private async runPipeline(pipeline: SourcePipeline): Promise<void> {
    const signal = this.abort.signal;
    if (!(await this.startWithRetry(pipeline))) return;
    let inflight: Promise<void> = Promise.resolve();
    try {
      while (!signal.aborted) {
        let frame: Frame;
        try {
          frame = await pipeline.runner.next(signal);
        } catch (err) {
          if (signal.aborted) break;
          if (err instanceof SourceExhaustedError) {
            this.logger.info({ source: pipeline.id }, 'source has no more frames');
            break;
          }
          throw err;
        }
        pipeline.lastActivity = performance.now();
        this.metrics.frameCaptured(pipeline.id);
        const preprocessStart = performance.now();
        let prepared;
        try {
          prepared = await this.preprocess(frame.data);
        } catch (err) {
          if (err instanceof FrameDecodeError || err instanceof FrameTooLargeError) {
            this.frameSkippedAsCorrupt(pipeline, err);
            continue;
          }
          throw err;
        }
        const preprocessMs = performance.now() - preprocessStart;
        await inflight;
        if (signal.aborted) break;
        inflight = this.classifyAndPublish(pipeline, frame, prepared, preprocessMs);
      }
    } finally {
      await inflight;
      await pipeline.runner.stop();
    }
  }

  private async classifyAndPublish(
    pipeline: SourcePipeline,
    frame: Frame,
    prepared: Awaited<ReturnType<Preprocessor>>,
    preprocessMs: number,
  ): Promise<void> {
    let output;
    try {
      output = await this.engine.run(prepared.tensor);
      if (this.engineError) {
        this.engineError = undefined;
        this.setState();
      }
    } catch (err) {
      this.metrics.frameDropped(pipeline.id, 'inference');
      this.engineError = `inference failed: ${(err as Error).message}`;
      if (this.throttle.shouldLog(`inference:${pipeline.id}`)) this.logger.error({ err, source: pipeline.id }, 'inference failed');
      this.setState();
      return;
    }
    const labels = topLabels(output.scores, {
      k: this.config.inference.topK,
      threshold: this.config.inference.threshold,
      labels: this.model.labels,
      activation: this.model.manifest.output.activation,
    });
    const result: ResultPayload = {
      seq: this.seq.next(pipeline.id),
      ts: new Date().toISOString(),
      source: pipeline.id,
      frame: { capturedAt: frame.capturedAt.toISOString(), width: prepared.width, height: prepared.height },
      model: { name: this.model.manifest.name, precision: this.model.precision },
      provider: this.engine.provider,
      labels,
      latencyMs: {
        preprocess: round2(preprocessMs),
        inference: round2(output.inferenceMs),
        total: round2(Date.now() - frame.capturedAt.getTime()),
      },
    };
    await this.publisher.enqueue(this.topics.labels(pipeline.id), JSON.stringify(result));
    this.metrics.recordResult(pipeline.id, {
      preprocessMs,
      inferenceMs: output.inferenceMs,
      totalMs: result.latencyMs.total,
    });
    pipeline.lastActivity = performance.now();
    this.resultCount += 1;
    if (this.resultWaiters.length > 0) {
      const due = this.resultWaiters.filter((w) => w.count <= this.resultCount);
      this.resultWaiters = this.resultWaiters.filter((w) => w.count > this.resultCount);
      for (const w of due) w.resolve();
    }
  }

  /** Stops capture, lets the in-flight frame finish, flushes what MQTT can take, then closes everything. */
  stop(reason = 'stop requested'): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info({ reason }, 'stopping');
      this.notifier.stopping();
      this.abort.abort();
      if (this.metricsTimer) clearInterval(this.metricsTimer);
      if (this.gaugeTimer) clearInterval(this.gaugeTimer);
      await Promise.all(this.pipelines.map((p) => p.done));
      this.state = 'offline';
      for (const c of [...this.closers].reverse()) {
        try {
          await c.close();
        } catch (err) {
          this.logger.warn({ err, component: c.name }, 'error while closing');
        }
      }
      this.notifier.stop();
      this.logger.info('stopped');
    })();
    return this.stopping;
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
