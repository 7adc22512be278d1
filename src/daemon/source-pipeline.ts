/**
 * One source's loop: capture → motion gate → preprocess → infer → publish policy → Result → outbox.
 * Capture and preprocessing of frame N+1 overlap the inference of frame N, and N+1 is sent to the
 * engine as soon as it is ready, to wait in the worker; frame N+2 is captured only once N's Result is
 * made. So at most two frames per source are with the engine (one more per extra inference worker:
 * each has one running while the next waits), and a model slower than the camera makes the source
 * skip frames instead of queueing them. A paused source stops its capture (the camera or
 * ffmpeg is released) until resumed.
 * What happens is told on the event bus; the pipeline itself knows nothing of MQTT topics, the status
 * or HTTP (docs/ARCHITECTURE.md, "Lifecycle").
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { CaptureRunner, SourceExhaustedError, type CaptureRunnerOptions, type Frame, type FrameSource } from '../capture/index.js';
import type { InferenceOutput, InputTensor } from '../inference/index.js';
import { topLabels } from '../inference/index.js';
import type { ResultLabel, ResultPayload } from '../publish/index.js';
import { round2 } from '../util/index.js';
import { FrameDecodeError, FrameTooLargeError, type PreprocessedFrame, type Preprocessor } from '../vision/index.js';
import type { DaemonEventBus } from '../features/index.js';

/** The part of the inference engine a pipeline uses (a fake in tests). */
export interface Inferencer {
  readonly provider: string;
  /** Runs it makes at once (inference workers); absent = 1. */
  readonly parallelism?: number;
  run(tensor: InputTensor): Promise<InferenceOutput>;
}

/** What turns scores into a Result: read per frame, so a reload of top-k or threshold applies at once. */
export interface LabelSettings {
  topK: number;
  threshold: number;
}

export interface PipelineDeps {
  source: FrameSource;
  runner: Omit<CaptureRunnerOptions, 'logger'>;
  preprocess: Preprocessor;
  engine: Inferencer;
  model: { name: string; precision: 'fp32' | 'int8'; labels?: string[]; activation: 'softmax' | 'none' };
  labelSettings: () => LabelSettings;
  /** The next `seq` of this source (continues across restarts). */
  nextSeq: (source: string) => number;
  /** Hands a Result to the outbox; resolves once it is stored. */
  publish: (result: ResultPayload) => Promise<unknown>;
  /** Motion gating: false keeps the frame from preprocessing and inference. Absent = every frame. */
  gate?: (image: Buffer) => Promise<boolean>;
  /** The gate forgets its reference frame: the next frame is inferred (after a failed inference or a resume). */
  regate?: () => void;
  /** The publish policy: whether these labels are published (`seq` counts only published Results). */
  policy?: (labels: ResultLabel[]) => 'publish' | 'unchanged' | 'rate';
  events: DaemonEventBus;
  logger: Logger;
}

export class SourcePipeline {
  readonly id: string;
  private readonly runner: CaptureRunner;
  private readonly abort = new AbortController();
  private done: Promise<void> | undefined;
  /** The frames with the engine, oldest first: each one's classification (its Result and hand-over). */
  private readonly inflight: Promise<void>[] = [];
  /** The last inferred frame's tensor array, handed back by the engine, for the next frame. */
  private spareTensor: Float32Array | undefined;
  /** The last Result's hand-over to the outbox. */
  private handover: Promise<void> = Promise.resolve();
  private paused = false;
  /**
   * Aborted on stop and on pause, so a wait for the next frame ends at once; renewed on resume. One per
   * pause, not AbortSignal.any per frame: a daemon at 30 frames/s for months must not pile up signals.
   */
  private waitAbort = new AbortController();
  private resumed: (() => void) | undefined;
  /** True while the loop sits out a pause: the source stopped, nothing with the engine or the outbox. */
  private sittingOut = false;
  private sittingOutWaiters: Array<() => void> = [];
  private latest: { data: Buffer; capturedAt: Date } | undefined;
  /** The source's `dropped` counter as last reported (frames a newer one replaced before we took them). */
  private reportedStale = 0;

  constructor(private readonly deps: PipelineDeps) {
    this.id = deps.source.id;
    this.runner = new CaptureRunner(deps.source, { ...deps.runner, logger: deps.logger });
    this.runner.on('health', (health) => {
      if (health.state === 'failing') {
        deps.events.emit('captureFailed', { source: this.id, error: health.error ?? 'capture failed', failures: health.failures });
      } else {
        deps.events.emit('captureRecovered', { source: this.id });
      }
    });
    this.runner.on('corrupt', (err) => deps.events.emit('frameSkipped', { source: this.id, reason: 'corrupt', error: err.message }));
  }

  /** Starts the loop in the background; failures are reported as events, never thrown. */
  start(): void {
    this.done ??= this.run().catch((err: unknown) => {
      // A bug, not a camera problem: say so and show the source as failing.
      this.deps.logger.error({ err, source: this.id }, 'source pipeline stopped by an unexpected error');
      this.deps.events.emit('captureFailed', { source: this.id, error: (err as Error).message, failures: 1 });
    });
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** The newest captured frame (kept by reference: no copy per frame). */
  get latestFrame(): { data: Buffer; capturedAt: Date } | undefined {
    return this.latest;
  }

  /**
   * Resolves once a pause has taken hold: the frames with the engine have their Results and the source
   * is stopped. At once when not paused, and at a stop.
   */
  whenPaused(): Promise<void> {
    if (!this.paused || this.sittingOut || !this.done || this.abort.signal.aborted) return Promise.resolve();
    // A stop, or the loop's end (an exhausted source), also ends the wait.
    return Promise.race([new Promise<void>((resolve) => this.sittingOutWaiters.push(resolve)), this.done]);
  }

  private releasePauseWaiters(): void {
    for (const resolve of this.sittingOutWaiters.splice(0)) resolve();
  }

  /** Pauses or resumes; false when it already was so. */
  setPaused(paused: boolean): boolean {
    if (paused === this.paused) return false;
    this.paused = paused;
    if (paused) {
      this.waitAbort.abort();
    } else {
      if (!this.abort.signal.aborted) this.waitAbort = new AbortController();
      this.resumed?.();
      this.releasePauseWaiters();
    }
    this.deps.events.emit('sourcePaused', { source: this.id, paused });
    return true;
  }

  /**
   * Stops capturing, lets the frame being inferred finish (at most `deadlineMs`: a hung worker must not
   * hold the stop), and stops the source.
   */
  async stop(deadlineMs = 10_000): Promise<void> {
    this.abort.abort();
    this.waitAbort.abort();
    this.releasePauseWaiters();
    if (!this.done) return;
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      this.done.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), deadlineMs))),
    ]);
    clearTimeout(timer);
    if (late) {
      this.deps.logger.warn({ source: this.id, deadlineMs }, 'the frame in flight did not finish in time; stopping the source without it');
      await this.runner.stop().catch(() => undefined);
    }
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    if (!(await this.startWithRetry())) return;
    try {
      while (!signal.aborted) {
        if (this.paused) {
          if (!(await this.sitOutPause())) break;
          continue;
        }
        let frame: Frame;
        try {
          frame = await this.runner.next(this.waitAbort.signal);
        } catch (err) {
          if (signal.aborted) break;
          if (this.paused) continue;
          if (err instanceof SourceExhaustedError) {
            // "finished" means every frame has its Result: the last one may still be with the engine.
            await this.settle();
            this.deps.logger.info({ source: this.id }, 'source has no more frames');
            this.deps.events.emit('sourceFinished', { source: this.id });
            break;
          }
          throw err;
        }
        this.deps.events.emit('frame', { source: this.id, captureSeq: frame.captureSeq, capturedAt: frame.capturedAt });
        this.reportStale();
        this.latest = { data: frame.data, capturedAt: frame.capturedAt };
        if (this.deps.gate && !(await this.deps.gate(frame.data))) {
          this.deps.events.emit('frameGated', { source: this.id });
          continue;
        }
        const preprocessStart = performance.now();
        let prepared: PreprocessedFrame;
        try {
          prepared = await this.deps.preprocess(frame.data, this.takeSpareTensor());
        } catch (err) {
          if (err instanceof FrameDecodeError || err instanceof FrameTooLargeError) {
            this.deps.events.emit('frameSkipped', { source: this.id, reason: 'corrupt', error: err.message });
            continue;
          }
          throw err;
        }
        const preprocessMs = performance.now() - preprocessStart;
        // Sent now, it waits in the worker behind the frame being inferred, so the worker starts it the
        // moment that one ends instead of after a round trip through this thread (which may be busy
        // decoding): +1 to +19 % Results/s in three interleaved pairs (README, Benchmarks), and no added
        // latency, since the next capture still waits for the frame ahead (docs/ARCHITECTURE.md, "Threads").
        const inference = this.deps.engine.run(prepared.tensor);
        inference.catch(() => undefined); // awaited in classify; not unhandled if the loop stops first
        // Classified in frame order: each waits for its own inference and the previous hand-over.
        const previous = this.inflight.at(-1) ?? Promise.resolve();
        const classified = previous.then(() => this.classify(frame, prepared, preprocessMs, inference));
        classified.catch(() => undefined); // a failed hand-over surfaces where it is awaited, below or in settle()
        this.inflight.push(classified);
        while (this.inflight.length > (this.deps.engine.parallelism ?? 1)) await this.inflight.shift();
        if (signal.aborted) break;
      }
    } finally {
      await this.settle();
      await this.runner.stop();
      this.reportStale();
    }
  }

  private takeSpareTensor(): Float32Array | undefined {
    const spare = this.spareTensor;
    this.spareTensor = undefined;
    return spare;
  }

  /** Waits for the frame in flight and the last hand-over to the outbox. */
  private async settle(): Promise<void> {
    for (const classified of this.inflight.splice(0)) await classified;
    await this.handover;
  }

  /**
   * Mirrors the source's `dropped` counter (a streaming source keeps only the newest frame; the ones it
   * replaced while we were busy) as `frameSkipped` with reason 'stale' and the count since the last
   * report. Read once per frame taken, so it costs no timer; the counter lives as long as the source.
   */
  private reportStale(): void {
    const { dropped } = this.runner.stats();
    if (dropped < this.reportedStale) this.reportedStale = 0;
    if (dropped === this.reportedStale) return;
    const count = dropped - this.reportedStale;
    this.reportedStale = dropped;
    this.deps.events.emit('frameSkipped', {
      source: this.id,
      reason: 'stale',
      error: 'replaced by a newer frame before it was taken',
      count,
    });
  }

  /**
   * While paused the source is stopped (a camera or ffmpeg is released; a files source starts over from
   * its first file on resume). False when the pipeline was stopped meanwhile.
   */
  private async sitOutPause(): Promise<boolean> {
    await this.settle();
    await this.runner.stop().catch((err: unknown) => this.deps.logger.warn({ err, source: this.id }, 'source did not stop cleanly'));
    this.deps.logger.info({ source: this.id }, 'source paused');
    this.sittingOut = true;
    this.releasePauseWaiters();
    const signal = this.abort.signal;
    await new Promise<void>((resolve) => {
      if (!this.paused || signal.aborted) return resolve();
      const done = () => {
        signal.removeEventListener('abort', done);
        this.resumed = undefined;
        resolve();
      };
      this.resumed = done;
      signal.addEventListener('abort', done);
    });
    this.sittingOut = false;
    if (signal.aborted) return false;
    this.deps.logger.info({ source: this.id }, 'source resumed');
    this.deps.regate?.();
    return this.startWithRetry();
  }

  /** A source that cannot start (e.g. its temp folder is unwritable) is retried like a failing capture. */
  private async startWithRetry(): Promise<boolean> {
    const { retryInitialMs = 1000, retryMaxMs = 30_000 } = this.deps.runner;
    // A pause during the retries ends them: the loop sits the pause out and starts the source on resume.
    for (let failures = 0; !this.abort.signal.aborted; ) {
      if (this.paused) return true;
      try {
        await this.runner.start();
        if (failures > 0) {
          this.deps.logger.info({ source: this.id }, 'source started');
          this.deps.events.emit('captureRecovered', { source: this.id });
        }
        return true;
      } catch (err) {
        failures += 1;
        const error = (err as Error).message;
        this.deps.logger.warn({ source: this.id, error, failures }, 'source cannot start; retrying');
        this.deps.events.emit('captureFailed', { source: this.id, error, failures });
        const delay = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(failures - 1, 30));
        await sleep(delay, undefined, { signal: this.waitAbort.signal }).catch(() => undefined);
      }
    }
    return false;
  }

  private async classify(
    frame: Frame,
    prepared: PreprocessedFrame,
    preprocessMs: number,
    inference: Promise<InferenceOutput>,
  ): Promise<void> {
    const { deps } = this;
    let output: InferenceOutput;
    try {
      output = await inference;
    } catch (err) {
      const error = (err as Error).message;
      deps.regate?.();
      deps.events.emit('inference', { source: this.id, ok: false, error });
      deps.events.emit('frameSkipped', { source: this.id, reason: 'inference', error });
      return;
    }
    if (output.input) this.spareTensor = output.input;
    deps.events.emit('inference', { source: this.id, ok: true });
    const { topK, threshold } = deps.labelSettings();
    const labels = topLabels(output.scores, { k: topK, threshold, labels: deps.model.labels, activation: deps.model.activation });
    const verdict = deps.policy?.(labels) ?? 'publish';
    if (verdict !== 'publish') {
      deps.events.emit('resultSuppressed', { source: this.id, reason: verdict });
      return;
    }
    const result: ResultPayload = {
      seq: deps.nextSeq(this.id),
      ts: new Date().toISOString(),
      source: this.id,
      frame: { capturedAt: frame.capturedAt.toISOString(), width: prepared.width, height: prepared.height },
      model: { name: deps.model.name, precision: deps.model.precision },
      provider: deps.engine.provider,
      labels,
      latencyMs: {
        preprocess: round2(preprocessMs),
        inference: round2(output.inferenceMs),
        total: round2(Date.now() - frame.capturedAt.getTime()),
      },
    };
    // The Result is handed to the outbox in order, but the next inference need not wait for the write:
    // it waits for this frame's inference and for the previous frame's hand-over (at most one write
    // outstanding, so a slow disk still slows the pipeline down instead of queueing Results in memory).
    const previous = this.handover;
    const handover = previous.then(async () => {
      await deps.publish(result);
      deps.events.emit('result', { source: this.id, result });
    });
    // A failed hand-over surfaces where it is awaited (the next frame, or the stop), as before; marked
    // handled meanwhile so it is not an unhandled rejection.
    handover.catch(() => undefined);
    this.handover = handover;
    await previous;
  }
}
