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

export interface FeatureContext {
  /** The configuration in effect (a reload replaces it; read it when needed, do not keep a copy). */
  config(): Config;
  logger: Logger;
  topics: Topics;
  publisher: Pick<MqttPublisher, 'publishNow' | 'onRequest' | 'subscribe' | 'onConnectionChange' | 'stats'>;
  metrics: Metrics;
  events: DaemonEventBus;
  status: { payload(): Record<string, unknown>; health(): HealthReport };
}

export interface Feature {
  readonly name: string;
  start(ctx: FeatureContext): Promise<void> | void;
  stop(): Promise<void> | void;
  /** A reload changed the configuration; apply what concerns this feature. */
  reload?(config: Config): Promise<void> | void;
}
