import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { abortableDelay } from './abort.js';
import { COMMON_CAPTURE_FIELDS, requireFields } from './fields.js';
import {
  CaptureError,
  CorruptFrameError,
  SourceExhaustedError,
  SourceStoppedError,
  type Frame,
  type FrameSource,
  type SourceHealth,
  type SourceStats,
} from './types.js';

export interface CaptureRunnerOptions {
  /** Minimum ms between the starts of two captures; 0 = as fast as the caller asks. */
  intervalMs: number;
  /** First retry delay after a failed capture, 0–3600000. Default 1000. */
  retryInitialMs?: number;
  /** Cap of the doubling retry delay. Default 30000 (or retryInitialMs if larger). */
  retryMaxMs?: number;
  /** Each retry delay is shortened by up to this fraction at random, so cameras failing together spread out. Default 0.2. */
  retryJitter?: number;
  /** Consecutive corrupt frames after which the source counts as failing (one bad frame is only skipped). Default 3. */
  corruptFramesToFail?: number;
  logger: Logger;
}

export interface CaptureRunnerEvents {
  /** After every failed capture (state 'failing', error, consecutive count) and after the first success that follows. */
  health: [SourceHealth];
  /** A frame arrived but was not a decodable image; it was skipped. */
  corrupt: [CorruptFrameError];
}

/**
 * Wraps a FrameSource for the daemon: paces captures, retries failures with capped exponential
 * backoff and jitter, and reports health. next() only rejects when the signal aborts, the source is
 * exhausted (SourceExhaustedError) or stopped; capture failures are retried, never thrown.
 */
export class CaptureRunner extends EventEmitter<CaptureRunnerEvents> {
  readonly source: FrameSource;
  private readonly intervalMs: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly retryJitter: number;
  private readonly logger: Logger;
  private lastAttemptAt: number | undefined;
  private currentHealth: SourceHealth = { state: 'ok', failures: 0, since: new Date() };
  private totalFailures = 0;
  private consecutiveCorrupt = 0;
  private readonly corruptFramesToFail: number;

  constructor(source: FrameSource, options: CaptureRunnerOptions) {
    super();
    const { retryJitter = 0.2 } = options;
    const retryInitialMs = options.retryInitialMs ?? COMMON_CAPTURE_FIELDS.retryInitialMs.default;
    // The ranges of capture.intervalMs and retry*: what the configuration accepts is what runs.
    const { intervalMs, retryMaxMs } = requireFields(source.id, '', COMMON_CAPTURE_FIELDS, {
      intervalMs: options.intervalMs,
      retryInitialMs,
      retryMaxMs: options.retryMaxMs ?? Math.max(COMMON_CAPTURE_FIELDS.retryMaxMs.default, retryInitialMs),
    });
    const check = (name: string, value: number, ok: boolean): void => {
      if (!ok) throw new TypeError(`source "${source.id}": ${name} is invalid: ${JSON.stringify(value)}`);
    };
    check('retryMaxMs', retryMaxMs, retryMaxMs >= retryInitialMs);
    check('retryJitter', retryJitter, retryJitter >= 0 && retryJitter <= 1);
    this.source = source;
    this.intervalMs = intervalMs;
    this.retryInitialMs = retryInitialMs;
    this.retryMaxMs = retryMaxMs;
    this.retryJitter = retryJitter;
    this.logger = options.logger;
    this.corruptFramesToFail = options.corruptFramesToFail ?? 3;
  }

  get id(): string {
    return this.source.id;
  }

  start(): Promise<void> {
    return this.source.start();
  }

  stop(): Promise<void> {
    return this.source.stop();
  }

  /** The source's counters; `failed` also includes failures the source threw as non-capture errors. */
  stats(): SourceStats {
    const stats = this.source.stats();
    return { ...stats, failed: Math.max(stats.failed, this.totalFailures) };
  }

  health(): SourceHealth {
    return { ...this.currentHealth };
  }

  /** The next frame, at least intervalMs after the previous attempt began; retries until one arrives. */
  async next(signal?: AbortSignal): Promise<Frame> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.lastAttemptAt !== undefined && this.intervalMs > 0) {
        const wait = this.lastAttemptAt + this.intervalMs - Date.now();
        if (wait > 0) await abortableDelay(wait, signal);
      }
      this.lastAttemptAt = Date.now();
      let frame: Frame;
      try {
        frame = await this.source.next(signal);
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (error instanceof SourceExhaustedError || error instanceof SourceStoppedError) throw error;
        if (error instanceof CorruptFrameError) {
          this.emit('corrupt', error);
          // One bad frame is skipped at the normal pace; a camera that only yields garbage is failing.
          if (++this.consecutiveCorrupt < this.corruptFramesToFail) continue;
        }
        this.recordFailure(error);
        await abortableDelay(this.retryDelayMs(), signal);
        continue;
      }
      this.recordSuccess();
      return frame;
    }
  }

  private retryDelayMs(): number {
    const exponent = Math.min(this.currentHealth.failures - 1, 30);
    const base = Math.min(this.retryMaxMs, this.retryInitialMs * 2 ** exponent);
    return Math.round(base * (1 - this.retryJitter * Math.random()));
  }

  private recordFailure(error: unknown): void {
    this.totalFailures++;
    const message = error instanceof Error ? error.message : String(error);
    if (!(error instanceof CaptureError)) {
      // A bug or an unexpected condition in the source: still retried so the daemon keeps running.
      this.logger.error({ err: error }, 'source failed with an unexpected error; retrying');
    }
    const wasOk = this.currentHealth.state === 'ok';
    this.currentHealth = {
      state: 'failing',
      error: message,
      failures: this.currentHealth.failures + 1,
      since: wasOk ? new Date() : this.currentHealth.since,
    };
    this.logger.debug({ failures: this.currentHealth.failures, error: message }, 'capture failed');
    this.emit('health', this.health());
  }

  private recordSuccess(): void {
    this.consecutiveCorrupt = 0;
    if (this.currentHealth.state === 'ok') return;
    this.currentHealth = { state: 'ok', failures: 0, since: new Date() };
    this.emit('health', this.health());
  }
}
