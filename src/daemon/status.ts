/**
 * What the daemon says about itself: the state machine behind `<base>/status` (online, degraded,
 * stopped), per-source availability, and the health check behind `/healthz` and the systemd watchdog.
 *
 * Two questions, kept apart on purpose:
 * - the state tells a user what is wrong (a camera unplugged: degraded, with the reason);
 * - health tells a supervisor whether restarting could help: the process is healthy while every part
 *   makes progress — a source delivering frames or failing in a handled way (a missing camera is
 *   retried; restarting would not bring it back), inferences completing, the broker acknowledging.
 *   A hung inference worker or a broker that takes Results and never acknowledges them is not.
 */
import { performance } from 'node:perf_hooks';
import { maskUrlCredentials } from '../config/index.js';
import type { DaemonEventBus, DaemonState, HealthReport, SourceState } from '../features/index.js';

export interface SourceStatus {
  state: SourceState;
  /** Paused by request: not captured, not counted as stuck, its error does not degrade the daemon. */
  paused: boolean;
  error?: string;
  since: string;
}

export interface StatusPayloadFields {
  state: 'online' | 'degraded' | 'stopped';
  since: string;
  error?: string;
  sources: Record<string, SourceStatus>;
  /** Configuration keys changed by a reload that wait for a restart. */
  restartNeeded?: string[];
  /** The last reload: when, and why it was refused if it was. */
  lastReload?: { at: string; ok: boolean; error?: string };
}

/** What the health check reads from the parts it watches. */
export interface HealthProbes {
  /** ms after which a source without progress counts as stuck. */
  stallMs(source: string): number;
  /** Age of the oldest unanswered inference (0 = none pending). */
  oldestInferenceMs(): number;
  /** ms after which an unanswered inference counts as stuck. */
  inferenceStallMs(): number;
  mqtt(): { connected: boolean; oldestInflightMs: number };
  /** ms the oldest unacknowledged Result may wait while connected. */
  maxAckWaitMs(): number;
}

interface SourceEntry {
  state: SourceState;
  paused: boolean;
  error?: string;
  since: Date;
  /** performance.now() of the last frame or handled failure. */
  lastProgress: number;
}

export class DaemonStatus {
  private daemonState: DaemonState = 'starting';
  private since = new Date();
  private readonly sources = new Map<string, SourceEntry>();
  private inferenceError: string | undefined;
  private storageErrorText: string | undefined;
  private restartNeeded: string[] = [];
  private lastReload: StatusPayloadFields['lastReload'];

  constructor(
    private readonly events: DaemonEventBus,
    private readonly probes: HealthProbes,
  ) {
    events.on('frame', ({ source }) => this.progress(source));
    events.on('captureFailed', ({ source, error }) => this.set(source, 'degraded', error));
    events.on('captureRecovered', ({ source }) => this.set(source, 'online'));
    events.on('frameSkipped', ({ source }) => this.progress(source));
    events.on('sourceFinished', ({ source }) => this.set(source, 'finished'));
    events.on('sourcePaused', ({ source, paused }) => {
      const entry = this.sources.get(source);
      if (!entry) return;
      entry.paused = paused;
      entry.lastProgress = performance.now();
      this.recompute();
    });
    events.on('inference', ({ ok, error }) => {
      const next = ok ? undefined : maskUrlCredentials(`inference failed: ${error}`);
      if (next === this.inferenceError) return;
      this.inferenceError = next;
      this.recompute();
    });
  }

  get state(): DaemonState {
    return this.daemonState;
  }

  addSource(id: string): void {
    this.sources.set(id, { state: 'online', paused: false, since: new Date(), lastProgress: performance.now() });
    this.recompute();
  }

  removeSource(id: string): void {
    if (this.sources.delete(id)) this.recompute();
  }

  /** A reload happened: `error` when it was refused (the running configuration stays). */
  reloaded(result: { restartNeeded?: string[]; error?: string }): void {
    if (!result.error) this.restartNeeded = [...(result.restartNeeded ?? [])].sort();
    this.lastReload = { at: new Date().toISOString(), ok: !result.error, ...(result.error ? { error: result.error } : {}) };
    this.events.emit('statusChanged', { state: this.daemonState, error: this.error() });
  }

  /** The outbox cannot write to the disk (`error`), or can again (undefined): degraded while it cannot. */
  storageError(text: string | undefined): void {
    const error = text === undefined ? undefined : maskUrlCredentials(text);
    if (error === this.storageErrorText) return;
    this.storageErrorText = error;
    this.recompute();
  }

  /** Leaves `starting` (on the first Result or handled failure) for online or degraded. */
  started(): void {
    if (this.daemonState === 'starting') this.recompute(true);
  }

  stopped(): void {
    this.transition('stopped');
  }

  /** The failing parts, one string, or undefined when nothing fails. */
  error(): string | undefined {
    const failing = [...this.sources]
      .filter(([, s]) => s.state === 'degraded' && !s.paused)
      .map(([id, s]) => `${id}: ${s.error ?? 'failing'}`);
    if (this.inferenceError) failing.push(this.inferenceError);
    if (this.storageErrorText) failing.push(this.storageErrorText);
    return failing.length ? failing.join('; ') : undefined;
  }

  fields(): StatusPayloadFields {
    const sources: Record<string, SourceStatus> = {};
    for (const [id, s] of this.sources) {
      sources[id] = {
        state: s.state,
        paused: s.paused,
        ...(s.state === 'degraded' && s.error ? { error: s.error } : {}),
        since: s.since.toISOString(),
      };
    }
    const error = this.daemonState === 'stopped' ? undefined : this.error();
    return {
      // A starting daemon is reported by what it knows so far.
      state: this.daemonState === 'starting' ? (error ? 'degraded' : 'online') : this.daemonState,
      since: this.since.toISOString(),
      ...(error ? { error } : {}),
      sources,
      ...(this.restartNeeded.length ? { restartNeeded: this.restartNeeded } : {}),
      ...(this.lastReload ? { lastReload: this.lastReload } : {}),
    };
  }

  health(): HealthReport {
    const now = performance.now();
    const stuck: string[] = [];
    const inferenceMs = this.probes.oldestInferenceMs();
    if (inferenceMs > this.probes.inferenceStallMs()) {
      stuck.push(`an inference has not completed for ${seconds(inferenceMs)}: the worker is hung`);
    } else {
      // (A hung worker also stops the sources, which wait for it: it alone is named then.)
      for (const [id, s] of this.sources) {
        if (s.state === 'finished' || s.paused) continue;
        const idle = now - s.lastProgress;
        if (idle > this.probes.stallMs(id))
          stuck.push(`source "${id}" made no progress (no frame, no handled failure) for ${seconds(idle)}`);
      }
    }
    const mqtt = this.probes.mqtt();
    if (mqtt.connected && mqtt.oldestInflightMs > this.probes.maxAckWaitMs()) {
      stuck.push(`the broker has not acknowledged a Result for ${seconds(mqtt.oldestInflightMs)}`);
    }
    const healthy = stuck.length === 0 && this.daemonState !== 'stopped';
    const error = this.error();
    return {
      healthy,
      status: !healthy ? 'unhealthy' : error ? 'degraded' : 'ok',
      state: this.daemonState,
      ...(error ? { error } : {}),
      ...(stuck.length ? { stuck } : {}),
      mqttConnected: mqtt.connected,
    };
  }

  private progress(source: string): void {
    const entry = this.sources.get(source);
    if (entry) entry.lastProgress = performance.now();
  }

  private set(source: string, state: SourceState, error?: string): void {
    const entry = this.sources.get(source);
    if (!entry) return;
    entry.lastProgress = performance.now();
    if (entry.state !== state) entry.since = new Date();
    entry.state = state;
    // Error texts reach the retained status: an RTSP URL's password must not.
    entry.error = error === undefined ? undefined : maskUrlCredentials(error);
    this.recompute();
  }

  private recompute(leaveStarting = false): void {
    if (this.daemonState === 'stopped') return;
    if (this.daemonState === 'starting' && !leaveStarting) {
      this.events.emit('statusChanged', { state: 'starting', error: this.error() });
      return;
    }
    this.transition(this.error() ? 'degraded' : 'online');
  }

  private transition(next: DaemonState): void {
    if (next !== this.daemonState) {
      this.daemonState = next;
      this.since = new Date();
    }
    this.events.emit('statusChanged', { state: next, error: next === 'stopped' ? undefined : this.error() });
  }
}

function seconds(ms: number): string {
  return `${Math.round(ms / 1000)} s`;
}
