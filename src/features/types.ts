/**
 * The seam for optional features (control requests, the metrics topic, HTTP, and later Home Assistant
 * discovery, snapshots …): each is started with one context and stopped on shutdown, and may take a
 * reloaded configuration. A feature talks to the rest only through the context. Work that must act
 * before inference (motion gating) is a stage of the source pipeline, not a feature.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { Metrics } from '../ops/index.js';
import type { MqttPublisher, Topics } from '../publish/index.js';
import type { DaemonEventBus, DaemonState } from './events.js';

/** What `/healthz` answers (see the daemon's status for how it is decided). */
export interface HealthReport {
  healthy: boolean;
  status: 'ok' | 'degraded' | 'unhealthy';
  state: DaemonState;
  error?: string;
  stuck?: string[];
  mqttConnected: boolean;
  [detail: string]: unknown;
}

/** The newest frame of a source, as captured (JPEG from cameras; any image format from files). */
export interface LatestFrame {
  data: Buffer;
  capturedAt: Date;
}

/** What features may do with the sources. */
export interface SourceControl {
  /** The running sources' ids, in configuration order. */
  ids(): string[];
  isPaused(id: string): boolean;
  /**
   * Pauses (true) or resumes (false) one source, or every source when `id` is undefined; returns the ids
   * it changed. Throws an Error naming the id when there is no such source.
   */
  setPaused(id: string | undefined, paused: boolean): string[];
  latestFrame(id: string): LatestFrame | undefined;
}

/** What the daemon does on request (control, Home Assistant), beside the sources. */
export interface DaemonOperations {
  /** Version, model, precision, provider and node placement, redacted configuration. */
  info(): Record<string, unknown>;
  /** Re-reads the configuration file (as SIGHUP does); rejects with the reason when the file is invalid. */
  reload(): Promise<ReloadOutcome>;
  /**
   * Applies `patch` (the config file's nested keys) over the running configuration, validated by the
   * same schema; refuses the whole patch, naming the keys, when one needs a restart or is set by the
   * environment. `persist` keeps it in the state directory across restarts.
   */
  set(patch: Record<string, unknown>, persist: boolean): Promise<ReloadOutcome & { persisted: boolean }>;
}

export interface ReloadOutcome {
  applied: string[];
  restartNeeded: string[];
  sources: { added: string[]; removed: string[]; restarted: string[] };
}

export interface FeatureContext {
  /** The configuration in effect (a reload replaces it; read it when needed, do not keep a copy). */
  config(): Config;
  logger: Logger;
  topics: Topics;
  publisher: Pick<MqttPublisher, 'publishNow' | 'onRequest' | 'subscribe' | 'onConnectionChange' | 'stats'>;
  metrics: Metrics;
  events: DaemonEventBus;
  status: { payload(): Record<string, unknown>; health(): HealthReport };
  sources: SourceControl;
  operations: DaemonOperations;
}

export interface Feature {
  readonly name: string;
  start(ctx: FeatureContext): Promise<void> | void;
  stop(): Promise<void> | void;
  /** A reload changed the configuration; apply what concerns this feature. */
  reload?(config: Config): Promise<void> | void;
}
