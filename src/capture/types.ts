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

export interface FilesSourceOptions extends CommonSourceOptions {
  backend: 'files';
  /** A folder (its image files, not recursive) or a glob such as `dir/*.jpg` or `dir/**\/*.png`. */
  path: string;
  /** Start again from the first image after the last; otherwise next() rejects with SourceExhaustedError. */
  loop: boolean;
}

export interface WebcamSourceOptions extends CommonSourceOptions {
  backend: 'webcam';
  /** V4L2 device path, e.g. /dev/video0 or /dev/v4l/by-id/usb-…-video-index0. */
  device: string;
  width: number;
  height: number;
  /** Frames fswebcam grabs and discards first so exposure can settle (--skip). Default 3. */
  skipFrames?: number;
  /** fswebcam --jpeg factor, 0–95. Default 85. */
  jpegQuality?: number;
  /** Per-capture limit; a hung fswebcam is killed. Default 10000. */
  timeoutMs?: number;
  /**
   * Where each capture's temporary JPEG is written (and deleted), e.g. $RUNTIME_DIRECTORY; relative paths
   * are resolved against the working directory. Default os.tmpdir().
   */
  tmpDir?: string;
}

export interface FfmpegSourceOptions extends CommonSourceOptions {
  backend: 'ffmpeg';
  /**
   * A V4L2 device (/dev/…), an rtsp/rtsps/http(s) URL, a file, or with inputFormat 'lavfi' a filter
   * graph such as `testsrc=size=320x240:rate=10`.
   */
  input: string;
  /**
   * For a /dev/ device: the camera's format (`-input_format`, e.g. 'mjpeg', which is passed through
   * without re-encoding). Otherwise the demuxer (`-f`, e.g. 'lavfi').
   */
  inputFormat?: string;
  width?: number;
  height?: number;
  fps?: number;
  /** No frame for this long (or after a restart) means ffmpeg has stalled: it is killed and restarted. */
  stallTimeoutMs: number;
  /** Inserted before `-i`, e.g. ['-rtsp_transport', 'udp']. */
  extraInputArgs?: string[];
  /** File inputs only: replay the file forever (-stream_loop -1). Default true. */
  loop?: boolean;
  /** Restart backoff after ffmpeg exits or stalls: initial and maximum delay. Defaults 1000 and 30000. */
  restartInitialMs?: number;
  restartMaxMs?: number;
  /** The ffmpeg executable: a path, or a name looked up on PATH. Default 'ffmpeg'. */
  ffmpegPath?: string;
}

export type SourceOptions = FilesSourceOptions | WebcamSourceOptions | FfmpegSourceOptions;
