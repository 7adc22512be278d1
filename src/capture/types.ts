/** One captured image, still encoded (JPEG/PNG as the source delivered it). */
export interface Frame {
  /** Id of the source that produced it ("camera" for the default source). */
  sourceId: string;
  /** Per-source capture counter, 1 for the first frame after the source was created (not the published Result seq). */
  captureSeq: number;
  capturedAt: Date;
  /** Encoded image bytes (JPEG unless the source says otherwise). */
  data: Buffer;
}

export interface SourceStats {
  captured: number;
  /** Captures that failed (process error, timeout, missing/corrupt output). */
  failed: number;
  /** Frames a streaming source received but replaced by a newer one before they were used. */
  dropped: number;
}

/** Health of a source as shown on the status topic. */
export interface SourceHealth {
  state: 'ok' | 'failing';
  /** Last error message while failing. */
  error?: string;
  /** Consecutive failures. */
  failures: number;
  since: Date;
}

/**
 * A camera or other image producer. Pull-based: the consumer asks for the next frame when it is ready,
 * so a slow consumer never makes frames pile up. Streaming sources keep only the newest frame.
 */
export interface FrameSource {
  readonly id: string;
  /** Its row in the registry (registry.ts). */
  readonly backend: string;
  /** Starts capturing; also after stop(), which makes the source usable again. */
  start(): Promise<void>;
  /**
   * The next frame; one call at a time. Rejects with CaptureError when one capture fails (the caller
   * decides to retry), with the signal's reason when it aborts (the source stays usable), with
   * SourceStoppedError when stop() is called meanwhile or was called before, and with an Error before
   * start().
   */
  next(signal?: AbortSignal): Promise<Frame>;
  /** Stops capturing; a pending next() rejects with SourceStoppedError. Calling it again does nothing. */
  stop(): Promise<void>;
  /** Counters since the source was created. */
  stats(): SourceStats;
}

export class CaptureError extends Error {
  constructor(
    message: string,
    readonly sourceId: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CaptureError';
  }
}

/**
 * A frame arrived but its bytes are not a decodable image (a truncated JPEG, a file that is not an
 * image). The runner skips it and counts it; only a run of them marks the source as failing.
 */
export class CorruptFrameError extends CaptureError {
  constructor(message: string, sourceId: string) {
    super(message, sourceId);
    this.name = 'CorruptFrameError';
  }
}

/**
 * A finite source (files without `loop`) has delivered its last frame. Not a capture failure:
 * the daemon should stop this source cleanly instead of retrying.
 */
export class SourceExhaustedError extends Error {
  constructor(readonly sourceId: string) {
    super(`source "${sourceId}" has no more frames`);
    this.name = 'SourceExhaustedError';
  }
}

/** next() was pending, or called, while the source was stopping. */
export class SourceStoppedError extends Error {
  constructor(readonly sourceId: string) {
    super(`source "${sourceId}" is stopped`);
    this.name = 'SourceStoppedError';
  }
}

/** Options every backend shares. */
export interface CommonSourceOptions {
  id: string;
  /** Minimum ms between capture attempts; applied by CaptureRunner, 0 = as fast as the consumer asks. */
  intervalMs: number;
}
