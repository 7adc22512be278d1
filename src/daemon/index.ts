/**
 * The daemon: starts and stops everything, as named steps in dependency order. Each step pushes the
 * closer that undoes it, so a start that fails (or is cancelled by SIGTERM) undoes exactly what it did,
 * in reverse. The work itself lives elsewhere: the per-source loop in source-pipeline.ts, the state and
 * health in status.ts, reload rules in reload.ts, optional features in ../features.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { runnerOptionsFor, sourceFromConfig, type FrameSource } from '../capture/index.js';
import {
  ConfigError,
  keysSetByEnv,
  mergeConfigInput,
  readSecretFile,
  redactConfig,
  type Config,
  type SourceConfig,
} from '../config/index.js';
import {
  DaemonEventBus,
  enabledFeatures,
  type DaemonOperations,
  type Feature,
  type FeatureContext,
  type HealthReport,
  type HttpFeature,
  type ReloadOutcome,
  type SourceControl,
} from '../features/index.js';
import { EnginePool, formatPlacement, InferenceEngine } from '../inference/index.js';
import { createNotifier, lockStateDir, memoryAllocator, Metrics, packageVersion, schedulingPolicy, type Notifier } from '../ops/index.js';
import { MqttPublisher, Outbox, SeqStore, startEmbeddedBroker, topicsFor, type Topics } from '../publish/index.js';
import { LogThrottle } from '../util/index.js';
import { createPreprocessor, tuneSharp, type Preprocessor } from '../vision/index.js';
import { prepareModelIsolated, sessionSettingsFor, StartCancelledError, targetForProvider, type PreparedModel } from './model-setup.js';
import { planReload, type ReloadPlan } from './reload.js';
import { SourcePipeline, type Inferencer } from './source-pipeline.js';
import { DaemonStatus } from './status.js';
import { sourceStages } from './stages.js';
import { writeSettings } from './settings.js';

export { planReload, type ReloadPlan } from './reload.js';
export { StartCancelledError } from './model-setup.js';
export { readSettings, SETTINGS_FILE } from './settings.js';

/** Start-up time asked of systemd per model build/quantization step (a Pi Zero-class board is the worst case). */
const MODEL_SETUP_TIMEOUT_MS = 15 * 60_000;
/** How long a stop waits for the frame being inferred. */
const STOP_INFLIGHT_DEADLINE_MS = 10_000;
/** Repeated per-frame problems are logged once per this interval (and always counted). */
const LOG_REPEAT_MS = 60_000;

export interface DaemonInfo {
  state: string;
  model: PreparedModel;
  provider: string;
  baseTopic: string;
  brokerUrl: string;
  httpPort?: number;
}

/** The engine as the daemon uses it (a fake in tests). */
export interface DaemonEngine extends Inferencer {
  readonly info: InferenceEngine['info'];
  readonly attempts: InferenceEngine['attempts'];
  readonly oldestPendingMs: number;
  close(): Promise<void>;
}

export interface DaemonOptions {
  /** Aborting it cancels a start in progress (SIGTERM during a first-start quantization). */
  signal?: AbortSignal;
  /** Replace parts for tests: the model, the engine, the frame sources. */
  overrides?: {
    prepareModel?: (config: Config) => Promise<PreparedModel>;
    createEngine?: (config: Config, model: PreparedModel) => Promise<DaemonEngine>;
    createSource?: (source: SourceConfig, config: Config) => FrameSource;
  };
  /**
   * How a reload (SIGHUP, the `reload` and `set` requests) reads the configuration again: the file and
   * the environment, with `overlay` (values set by requests) over the file. Without it those requests
   * are refused. `overlay` is what the daemon starts with (the settings kept in the state directory).
   */
  configSource?: {
    load(overlay: Record<string, unknown>): Config;
    overlay?: Record<string, unknown>;
    /** The environment `load` reads (default process.env): a key it sets cannot be changed by `set`. */
    env?: NodeJS.ProcessEnv;
  };
}

export type ReloadReport = ReloadOutcome;

type Closer = { name: string; close: () => Promise<void> | void };

/** Everything a started daemon holds; the steps fill it in order. */
interface Parts {
  model: PreparedModel;
  engine: DaemonEngine;
  preprocess: Preprocessor;
  brokerUrl: string;
  topics: Topics;
  outbox: Outbox;
  seq: SeqStore;
  publisher: MqttPublisher;
  features: Feature[];
  http?: HttpFeature;
}

export class Daemon {
  private readonly events = new DaemonEventBus();
  private readonly pipelines = new Map<string, SourcePipeline>();
  private readonly closers: Closer[] = [];
  private readonly status: DaemonStatus;
  private readonly metrics = new Metrics();
  private readonly notifier: Notifier;
  private parts = {} as Parts;
  private stopping?: Promise<void>;
  private readyTold = false;
  /** Results handed to the outbox since start (bench and tests read it). */
  resultCount = 0;
  private resultWaiters: Array<{ count: number; resolve: () => void }> = [];
  /** Values set by `set` requests, over the file (and kept in the state directory when asked). */
  private overlay: Record<string, unknown>;
  /** Reloads and sets, one at a time. */
  private reconfiguring: Promise<unknown> = Promise.resolve();

  private constructor(
    private config: Config,
    private readonly logger: Logger,
    private readonly options: DaemonOptions,
  ) {
    this.notifier = createNotifier({ logger });
    this.overlay = structuredClone(options.configSource?.overlay ?? {});
    this.status = new DaemonStatus(this.events, {
      stallMs: (id) => this.stallMs(this.config.sources.find((s) => s.id === id)),
      oldestInferenceMs: () => this.parts.engine?.oldestPendingMs ?? 0,
      inferenceStallMs: () => this.stallMs(undefined),
      mqtt: () => {
        const stats = this.parts.publisher?.stats();
        return { connected: stats?.connected ?? false, oldestInflightMs: stats?.oldestInflightMs ?? 0 };
      },
      maxAckWaitMs: () => this.config.health.maxAckWaitSec * 1000,
    });
    this.observe();
  }

  /** Starts everything; resolves once frames are flowing (or being retried) and MQTT is connecting. */
  static async start(config: Config, logger: Logger, options: DaemonOptions = {}): Promise<Daemon> {
    const daemon = new Daemon(config, logger, options);
    try {
      for (const step of daemon.steps()) {
        if (options.signal?.aborted) throw new StartCancelledError(`start cancelled before "${step.name}"`);
        await step.run();
      }
    } catch (err) {
      await daemon.unwind();
      throw err;
    }
    return daemon;
  }

  /** The start, in dependency order; each step pushes the closer that undoes it. */
  private steps(): Array<{ name: string; run: () => Promise<void> }> {
    const { config, logger, options } = this;
    const p = this.parts;
    return [
      {
        name: 'state directory',
        run: async () => {
          await mkdir(config.stateDir, { recursive: true });
          const lock = await lockStateDir(config.stateDir, { logger });
          this.closers.push({ name: 'state lock', close: () => lock.release() });
          tuneSharp(config.inference.threads * config.inference.workers);
          this.closers.push({ name: 'metrics', close: () => this.metrics.close() });
        },
      },
      {
        name: 'model',
        // Building or quantizing the model (first start only) can take minutes on a small board.
        run: async () => {
          p.model = await (options.overrides?.prepareModel?.(config) ??
            prepareModelIsolated(config, logger, {
              signal: options.signal,
              onStatus: (status) => void this.notifier.status(status, { extendTimeoutMs: MODEL_SETUP_TIMEOUT_MS }),
            }));
          p.preprocess = createPreprocessor(p.model.manifest.input);
        },
      },
      {
        name: 'inference engine',
        run: async () => {
          p.engine = await (options.overrides?.createEngine?.(config, p.model) ?? this.createEngine());
          this.closers.push({ name: 'inference', close: () => p.engine.close() });
          this.describeEngine();
          this.metrics.setModelInfo({ model: p.model.manifest.name, precision: p.model.precision, provider: p.engine.provider });
        },
      },
      {
        name: 'embedded broker',
        run: async () => {
          p.brokerUrl = config.mqtt.url;
          if (!config.mqtt.embeddedBroker.enabled) return;
          const { host, port } = config.mqtt.embeddedBroker;
          const embedded = await startEmbeddedBroker({ host, port, logger });
          if (!embedded) {
            logger.info({ port }, 'a broker already listens on the embedded broker port: publishing to it');
            return;
          }
          this.closers.push({ name: 'embedded broker', close: () => embedded.close() });
          p.brokerUrl = embedded.url;
          logger.info({ url: embedded.url }, 'embedded MQTT broker listening');
        },
      },
      {
        name: 'outbox',
        run: async () => {
          const { maxMessages, maxBytes, maxAgeSec, fsyncIntervalMs } = config.outbox;
          p.outbox = await Outbox.open(
            path.join(config.stateDir, 'outbox'),
            {
              maxMessages,
              maxBytes,
              maxAgeSec,
              fsyncIntervalMs,
              // A full or read-only disk: Results are held in memory (and still sent); the daemon says so until it writes again.
              onStorageError: (err) =>
                this.status.storageError(
                  err
                    ? `outbox cannot write to the disk (${(err as NodeJS.ErrnoException).code ?? err.message}): Results held in memory`
                    : undefined,
                ),
            },
            logger,
          );
          this.closers.push({ name: 'outbox', close: () => p.outbox.close() });
          // The seq rides in the outbox's writes; seq.json is written at open and close only.
          p.seq = SeqStore.open(config.stateDir, p.outbox, logger);
          this.closers.push({ name: 'seq', close: () => p.seq.close() });
        },
      },
      {
        name: 'publisher',
        run: async () => {
          const m = config.mqtt;
          p.topics = topicsFor(m.baseTopic);
          p.publisher = new MqttPublisher(
            {
              url: p.brokerUrl,
              clientId: m.clientId,
              protocolVersion: m.protocolVersion,
              username: m.username || undefined,
              password: m.passwordFile ? await readSecretFile(m.passwordFile, 'mqtt.passwordFile') : undefined,
              ca: m.ca ? await readFile(m.ca) : undefined,
              caFile: m.ca || undefined,
              cert: m.cert ? await readFile(m.cert) : undefined,
              key: m.key ? await readFile(m.key) : undefined,
              rejectUnauthorized: m.rejectUnauthorized,
              keepaliveSec: m.keepaliveSec,
              connectTimeoutMs: m.connectTimeoutSec * 1000,
              reconnectMinMs: m.reconnectMinSec * 1000,
              reconnectMaxMs: m.reconnectMaxSec * 1000,
              sessionExpirySec: m.sessionExpirySec,
              resultExpirySec: m.resultExpirySec,
              resultUserProperties: { model: p.model.manifest.name, precision: p.model.precision, provider: p.engine.provider },
              qos: m.qos,
              baseTopic: m.baseTopic,
              outbox: p.outbox,
              statusPayload: () => this.statusPayload(),
            },
            logger,
          );
          p.publisher.onConnectionChange((connected) => this.events.emit('mqttConnection', { connected }));
          await p.publisher.start();
          this.closers.push({ name: 'mqtt', close: () => p.publisher.stop(5_000) });
          // The publisher owns the outbox and the connection: the metrics read their counts at each scrape.
          this.metrics.trackPublishing(() => ({
            ...p.publisher.stats(),
            outboxWriteErrors: p.outbox.writeErrors,
            outboxCorrupt: p.outbox.corrupt,
          }));
        },
      },
      {
        name: 'features',
        run: async () => {
          const { features, http } = enabledFeatures(config);
          p.features = [];
          p.http = http;
          const ctx = this.featureContext();
          for (const feature of features) {
            await feature.start(ctx);
            p.features.push(feature);
            this.closers.push({ name: feature.name, close: () => feature.stop() });
          }
        },
      },
      {
        name: 'sources',
        run: async () => {
          for (const source of config.sources) this.startSource(source);
          this.closers.push({ name: 'sources', close: () => this.stopSources() });
          this.notifier.startWatchdog(() => this.status.health().healthy);
          this.notifier.status(`starting: publishing to ${p.brokerUrl} as ${config.mqtt.baseTopic}`);
        },
      },
    ];
  }

  private async createEngine(): Promise<DaemonEngine> {
    const { config } = this;
    // Mesa (a GPU's Vulkan driver, or lavapipe) compiles WebGPU's shaders on the first run: 5 s in
    // software, 0.9 s with its cache. Keep that cache with ours unless the environment says otherwise.
    process.env.MESA_SHADER_CACHE_DIR ??= path.join(config.stateDir, 'cache', 'mesa');
    // Saved optimized graphs (CPU) and compiled accelerator graphs (EP context) make a restart's
    // first Result come sooner: the optimizer or the NPU compiler is most of the load.
    const settings = {
      ...sessionSettingsFor(config, this.parts.model),
      optimizedModelCacheDir: path.join(config.stateDir, 'cache', 'ort'),
      profileCpuPlacement: false,
      ...(config.inference.epContextCache ? { epContextCacheDir: path.join(config.stateDir, 'cache', 'ep') } : {}),
    };
    const { workers } = config.inference;
    return workers > 1 ? EnginePool.create(settings, this.logger, workers) : InferenceEngine.create(settings, this.logger);
  }

  /** Logs what runs where, and what a user might want to change about it. */
  private describeEngine(): void {
    const { model, engine } = this.parts;
    const { logger } = this;
    logger.info(
      {
        model: model.manifest.name,
        precision: model.precision,
        provider: engine.provider,
        attempts: engine.attempts,
        synthetic: model.synthetic || undefined,
      },
      model.synthetic ? 'model loaded (synthetic weights: labels are meaningless)' : 'model loaded',
    );
    // An accelerator that leaves nodes to the CPU pays two copies per crossing on every run. WebGPU has
    // no QuantizeLinear kernel: an INT8 QDQ model bounces every quantized tensor through the CPU.
    const placement = engine.info.placement;
    if (placement && engine.provider !== 'cpu' && placement.nodes.cpu) {
      const hint =
        engine.provider === 'webgpu' && model.precision === 'int8'
          ? ': WebGPU has no QuantizeLinear kernel, so an INT8 model runs faster as FP32 there (model.precision fp32)'
          : ': set inference.cpuFallback false to refuse a split graph and use the next provider listed';
      const total = Object.values(placement.nodes).reduce((a, b) => a + b, 0);
      logger.warn(
        { provider: engine.provider, placement },
        `${engine.provider} left ${placement.nodes.cpu} of ${total} nodes to the CPU (${formatPlacement(placement)})${hint}`,
      );
    }
    // An INT8 model shaped for another provider runs, but slower or partly on the CPU.
    const made = model.manifest.quantization?.target;
    const wanted = targetForProvider(engine.provider);
    if (made && made !== wanted && !(made === 'cpu-arm' && wanted === 'cpu')) {
      logger.warn(
        { provider: engine.provider, quantizedFor: made, suggested: wanted },
        `this INT8 model was quantized for ${made}, but runs on ${engine.provider}: \`inceptiond model quantize FP32 OUT --target ${wanted}\` shapes one for it`,
      );
    }
  }

  private featureContext(): FeatureContext {
    return {
      config: () => this.config,
      logger: this.logger,
      topics: this.parts.topics,
      publisher: this.parts.publisher,
      metrics: this.metrics,
      events: this.events,
      status: { payload: () => this.statusPayload(), health: () => this.health() },
      sources: this.sourceControl(),
      operations: this.operations(),
    };
  }

  private sourceControl(): SourceControl {
    const pipeline = (id: string) => {
      const found = this.pipelines.get(id);
      if (!found) throw new Error(`no source "${id}" (sources: ${[...this.pipelines.keys()].join(', ') || 'none'})`);
      return found;
    };
    return {
      ids: () => this.config.sources.map((s) => s.id).filter((id) => this.pipelines.has(id)),
      isPaused: (id) => this.pipelines.get(id)?.isPaused ?? false,
      setPaused: (id, paused) => {
        const targets = id === undefined ? [...this.pipelines.values()] : [pipeline(id)];
        return targets.filter((p) => p.setPaused(paused)).map((p) => p.id);
      },
      latestFrame: (id) => pipeline(id).latestFrame,
    };
  }

  private operations(): DaemonOperations {
    return {
      info: () => this.describe(),
      reload: () => this.reloadFromSource(),
      set: (patch, persist) => this.set(patch, persist),
    };
  }

  /** What the `info` request answers: what runs, where, and with which (redacted) configuration. */
  private describe(): Record<string, unknown> {
    const { model, engine } = this.parts;
    return {
      version: packageVersion,
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      allocator: memoryAllocator().name,
      scheduling: schedulingPolicy(),
      deviceId: this.config.deviceId,
      baseTopic: this.config.mqtt.baseTopic,
      state: this.status.state,
      model: {
        name: model.manifest.name,
        precision: model.precision,
        path: model.modelPath,
        ...(model.synthetic ? { synthetic: true } : {}),
        ...(model.manifest.quantization?.target ? { quantizedFor: model.manifest.quantization.target } : {}),
      },
      provider: engine.provider,
      ...(engine.info.placement ? { placement: engine.info.placement } : {}),
      providerAttempts: engine.attempts,
      sources: Object.fromEntries(
        this.config.sources.map((s) => [s.id, { backend: s.backend, paused: this.pipelines.get(s.id)?.isPaused ?? false }]),
      ),
      settings: this.overlay,
      config: redactConfig(this.config),
    };
  }

  /** Metrics, logs, the status topic and systemd follow the events. */
  private observe(): void {
    const { events, metrics, logger } = this;
    let lastLogged: string | undefined;
    const repeats = new LogThrottle(LOG_REPEAT_MS);
    events.on('frame', ({ source }) => metrics.frameCaptured(source));
    events.on('captureFailed', ({ source, error, failures }) => {
      metrics.captureFailed(source);
      logger.warn({ source, error, failures }, 'capture failing');
      this.toldReady();
    });
    events.on('captureRecovered', ({ source }) => logger.info({ source }, 'capture recovered'));
    events.on('frameSkipped', ({ source, reason, error, count }) => {
      metrics.frameDropped(source, reason, count);
      if (reason === 'stale' || !repeats.shouldLog(`${reason}:${source}`)) return;
      if (reason === 'corrupt') {
        logger.warn(
          { source, err: error },
          'frame skipped: not a decodable image (counted in frames_dropped_total{reason="corrupt"}; logged once a minute)',
        );
      } else {
        logger.error(
          { source, err: error },
          'inference failed (counted in frames_dropped_total{reason="inference"}; logged once a minute)',
        );
      }
    });
    events.on('sourceFinished', () => this.toldReady());
    events.on('frameGated', ({ source }) => {
      metrics.frameGated(source);
      this.toldReady();
    });
    events.on('resultSuppressed', ({ source, reason }) => {
      metrics.resultSuppressed(source, reason);
      this.toldReady();
    });
    events.on('result', ({ source, result }) => {
      metrics.recordResult(source, {
        preprocessMs: result.latencyMs.preprocess,
        inferenceMs: result.latencyMs.inference,
        totalMs: result.latencyMs.total,
      });
      this.resultCount += 1;
      if (this.resultWaiters.length > 0) {
        const due = this.resultWaiters.filter((w) => w.count <= this.resultCount);
        this.resultWaiters = this.resultWaiters.filter((w) => w.count > this.resultCount);
        for (const w of due) w.resolve();
      }
      this.toldReady();
    });
    events.on('statusChanged', ({ state, error }) => {
      this.parts.publisher?.setStatus(this.statusPayload());
      const line = `${state}:${error ?? ''}`;
      if (state === 'starting' || line === lastLogged) return;
      lastLogged = line;
      logger.info({ state, error }, 'state');
      if (state !== 'stopped') void this.notifier.status(state === 'online' ? 'online' : `degraded: ${error}`);
    });
  }

  /**
   * READY=1 once the daemon has shown it works: the first Result, or the first failure it handles (a
   * missing camera is retried, and systemd should not wait for it).
   */
  private toldReady(): void {
    if (this.readyTold) return;
    this.readyTold = true;
    this.status.started();
    void this.notifier.ready(`publishing to ${this.parts.brokerUrl} as ${this.config.mqtt.baseTopic}`);
  }

  private stallMs(source: SourceConfig | undefined): number {
    if (this.config.health.stallSec > 0) return this.config.health.stallSec * 1000;
    const s = source ?? this.config.capture;
    return Math.max(120_000, 3 * (s.retryMaxMs + s.intervalMs));
  }

  private startSource(sourceConfig: SourceConfig): void {
    const { config, parts, logger } = this;
    const source =
      this.options.overrides?.createSource?.(sourceConfig, config) ??
      sourceFromConfig(sourceConfig, { runtimeDir: config.runtimeDir }, logger);
    const { logger: _, ...runner } = runnerOptionsFor(sourceConfig, logger);
    // Read per frame: a reload changes a source's stages without restarting its camera.
    const settings = () => this.config.sources.find((s) => s.id === sourceConfig.id) ?? sourceConfig;
    const pipeline = new SourcePipeline({
      ...sourceStages(settings),
      source,
      runner,
      preprocess: parts.preprocess,
      engine: parts.engine,
      model: {
        name: parts.model.manifest.name,
        precision: parts.model.precision,
        labels: parts.model.labels,
        activation: parts.model.manifest.output.activation,
      },
      labelSettings: () => this.config.inference,
      nextSeq: (id) => parts.seq.next(id),
      publish: (result) => parts.publisher.enqueue(parts.topics.labels(result.source), JSON.stringify(result)),
      events: this.events,
      logger: logger.child({ source: sourceConfig.id }),
    });
    this.pipelines.set(sourceConfig.id, pipeline);
    this.status.addSource(sourceConfig.id);
    pipeline.start();
  }

  /** Stops one pipeline; `forget` (a source removed by a reload) also drops it from the status. */
  private async stopSource(id: string, forget: boolean): Promise<void> {
    const pipeline = this.pipelines.get(id);
    if (!pipeline) return;
    this.pipelines.delete(id);
    await pipeline.stop(STOP_INFLIGHT_DEADLINE_MS);
    if (forget) this.status.removeSource(id);
  }

  private async stopSources(): Promise<void> {
    await Promise.all([...this.pipelines.keys()].map((id) => this.stopSource(id, false)));
  }

  get info(): DaemonInfo {
    return {
      state: this.status.state,
      model: this.parts.model,
      provider: this.parts.engine.provider,
      baseTopic: this.config.mqtt.baseTopic,
      brokerUrl: this.parts.brokerUrl,
      httpPort: this.parts.http?.port,
    };
  }

  statusPayload(): Record<string, unknown> {
    const { model, engine } = this.parts;
    return {
      ...this.status.fields(),
      version: packageVersion,
      ...(model ? { model: { name: model.manifest.name, precision: model.precision, synthetic: model.synthetic || undefined } } : {}),
      ...(engine ? { provider: engine.provider } : {}),
    };
  }

  health(): HealthReport {
    return this.status.health();
  }

  /**
   * Pauses or resumes every source, as the `pause` and `resume` requests do; a pause resolves once it
   * has taken hold (each source stopped, its frame in flight done). The bench uses it to take the
   * ceiling between stretches of the pipeline. Returns the sources that changed.
   */
  async pauseSources(paused: boolean): Promise<string[]> {
    const changed = this.sourceControl().setPaused(undefined, paused);
    if (paused) await Promise.all([...this.pipelines.values()].map((p) => p.whenPaused()));
    return changed;
  }

  /** Resolves once `count` Results have been handed to the outbox since start. */
  waitForResults(count: number): Promise<void> {
    if (this.resultCount >= count) return Promise.resolve();
    return new Promise((resolve) => this.resultWaiters.push({ count, resolve }));
  }

  metricsPeek() {
    return this.metrics.peek();
  }

  /**
   * Applies a new configuration: live keys at once (a changed source is restarted on its own, the MQTT
   * connection stays), the others named in the log and on the status topic as waiting for a restart.
   */
  reload(next: Config): Promise<ReloadReport> {
    return this.serially(() => this.apply(next));
  }

  /**
   * Reads the configuration again (the file, the environment, and the values set by requests) and
   * applies it; an invalid file is refused with its reason (on the status too) and the running
   * configuration stays. SIGHUP and the `reload` request.
   */
  reloadFromSource(): Promise<ReloadReport> {
    return this.serially(async () => {
      let next: Config;
      try {
        next = this.configSource().load(this.overlay);
      } catch (err) {
        const reason = err instanceof ConfigError ? err.message : `cannot read the configuration: ${(err as Error).message}`;
        this.logger.error({ reason }, `reload refused, the running configuration stays: ${reason}`);
        this.reloadRefused(reason);
        throw new Error(reason);
      }
      try {
        return await this.apply(next);
      } catch (err) {
        this.logger.error({ err }, 'reload failed');
        this.reloadRefused((err as Error).message);
        throw err;
      }
    });
  }

  /**
   * The `set` request: `patch` over the running configuration's file values, validated by the same
   * schema. Refused as a whole, naming the keys, when one needs a restart or is set by the environment
   * (which would win). `persist` keeps the values in <stateDir>/settings.json, read at start after the
   * file (the environment still wins).
   */
  set(patch: Record<string, unknown>, persist: boolean): Promise<ReloadReport & { persisted: boolean }> {
    return this.serially(async () => {
      const source = this.configSource();
      const keys = leafKeys(patch);
      if (keys.length === 0) throw new Error('config: nothing to set (give the keys to change, e.g. {"inference": {"topK": 3}})');
      const fromEnv = keysSetByEnv(source.env ?? process.env).filter((e) => keys.some((k) => overlaps(k, e.key)));
      if (fromEnv.length > 0) {
        throw new Error(
          `set by the environment, which wins over a request: ${fromEnv.map((e) => `${e.key} (${e.env})`).join(', ')}; change it there`,
        );
      }
      const candidate = mergeConfigInput(this.overlay, patch);
      const next = source.load(candidate);
      const blocked = planReload(this.config, next).restartNeeded.filter((k) => keys.some((p) => overlaps(p, k)));
      if (blocked.length > 0) {
        throw new Error(`cannot change while running (needs a restart; change the configuration file): ${blocked.join(', ')}`);
      }
      const report = await this.apply(next);
      this.overlay = candidate;
      if (persist) await writeSettings(this.config.stateDir, candidate);
      return { ...report, persisted: persist };
    });
  }

  private configSource(): NonNullable<DaemonOptions['configSource']> {
    const source = this.options.configSource;
    if (!source) throw new Error('this daemon was started without a configuration source: it cannot reload');
    return source;
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.reconfiguring.then(work, work);
    this.reconfiguring = run.catch(() => undefined);
    return run;
  }

  private async apply(next: Config): Promise<ReloadReport> {
    const plan: ReloadPlan = planReload(this.config, next);
    await this.notifier.reloading();
    this.config = plan.effective;
    this.logger.level = plan.effective.log.level;
    const { added, removed, changed } = plan.sources;
    await Promise.all([...removed.map((id) => this.stopSource(id, true)), ...changed.map((s) => this.stopSource(s.id, false))]);
    for (const s of [...changed, ...added]) this.startSource(s);
    for (const feature of this.parts.features ?? []) await feature.reload?.(plan.effective);
    this.status.reloaded({ restartNeeded: plan.restartNeeded });
    const report: ReloadReport = {
      applied: plan.live,
      restartNeeded: plan.restartNeeded,
      sources: { added: added.map((s) => s.id), removed, restarted: changed.map((s) => s.id) },
    };
    this.logger.info(
      report,
      plan.restartNeeded.length
        ? `configuration reloaded; these need a restart: ${plan.restartNeeded.join(', ')}`
        : 'configuration reloaded',
    );
    this.events.emit('reloaded', { config: plan.effective, applied: plan.live, restartNeeded: plan.restartNeeded });
    await this.notifier.ready();
    return report;
  }

  /** A reload that could not be applied (an invalid file): shown on the status; the running configuration stays. */
  reloadRefused(reason: string): void {
    this.status.reloaded({ error: reason });
  }

  /** Stops capture, lets the frames in flight finish (with a deadline), flushes what MQTT can take, closes everything. */
  stop(reason = 'stop requested'): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info({ reason }, 'stopping');
      void this.notifier.stopping();
      // Sources first: their last Results reach the outbox before the publisher says "stopped".
      await this.stopSources();
      this.status.stopped();
      await this.unwind();
      this.logger.info('stopped');
    })();
    return this.stopping;
  }

  private async unwind(): Promise<void> {
    for (const c of this.closers.splice(0).reverse()) {
      try {
        await c.close();
      } catch (err) {
        this.logger.warn({ err, component: c.name }, 'error while closing');
      }
    }
    this.notifier.stop();
  }
}

/** The dotted keys of the leaves of a nested object (arrays are leaves, like `sources`). */
function leafKeys(value: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(value).flatMap(([k, v]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length > 0
      ? leafKeys(v as Record<string, unknown>, key)
      : [key];
  });
}

/** One key is the other or lies under it (`inference` and `inference.topK`; `sources` and `sources[0].id`). */
function overlaps(a: string, b: string): boolean {
  const under = (x: string, y: string) => x === y || x.startsWith(`${y}.`) || x.startsWith(`${y}[`);
  return under(a, b) || under(b, a);
}
