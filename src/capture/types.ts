/** One captured image, still encoded (JPEG/PNG as the source delivered it). */
export interface Frame {
  /** Id of the source that produced it ("camera" for the default source). */
  sourceId: string;
  /** Per-source capture counter since start (not the published Result seq). */
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
  readonly backend: 'webcam' | 'ffmpeg' | 'files';
  start(): Promise<void>;
  /** The next frame. Rejects with CaptureError when one capture fails; the caller decides to retry. */
  next(signal?: AbortSignal): Promise<Frame>;
  stop(): Promise<void>;
  stats(): SourceStats;
}

export class CaptureError extends Error {
  constructor(message: string, readonly sourceId: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CaptureError';
  }
}
