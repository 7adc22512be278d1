import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { raceAbort } from './abort.js';
import { defineBackend } from './backend.js';
import { COMMON_CAPTURE_FIELDS, isUnset, requireFields, type FieldProblem, type Fields, type ValuesOf } from './fields.js';
import { JpegStreamSplitter } from './jpeg.js';
import { CaptureError, SourceStoppedError, type CommonSourceOptions, type Frame, type FrameSource, type SourceStats } from './types.js';
import { requireSourceId } from './validate.js';

/** Grace between SIGTERM and SIGKILL when stopping ffmpeg. */
const KILL_GRACE_MS = 2000;
const STDERR_TAIL_LINES = 20;
const URL_INPUT = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
/** File inputs are replayed forever unless `loop` is false. */
const LOOP_DEFAULT = true;

/** The keys of `capture.ffmpeg.*`: the values ffmpeg is started with, so the configuration refuses the rest. */
export const FFMPEG_FIELDS = {
  input: {
    kind: 'string',
    doc: 'V4L2 device, RTSP/HTTP URL or file (backend ffmpeg)',
    default: '',
    empty: 'required',
    // No control characters; a leading "-" would make ffmpeg read the input as an option.
    pattern: /^(?!-)(?=.*\S)[^\u0000-\u001f]*$/,
    rule: 'must be a device, URL or file, not starting with "-" (ffmpeg would read it as an option)',
  },
  inputFormat: {
    kind: 'string',
    doc: 'ffmpeg -f for the input, e.g. v4l2 or rtsp ("" = probe)',
    default: '',
    empty: 'unset',
    pattern: /^[A-Za-z0-9_]+$/,
    rule: 'must be a format name such as mjpeg or lavfi',
  },
  width: { kind: 'integer', doc: 'Output width (0 = source default)', default: 0, unset: 0, min: 16, max: 8192 },
  height: { kind: 'integer', doc: 'Output height (0 = source default)', default: 0, unset: 0, min: 16, max: 8192 },
  fps: { kind: 'number', doc: 'Frames per second asked of ffmpeg (0 = source default)', default: 0, unset: 0, min: 0.01, max: 240 },
  stallTimeoutMs: { kind: 'integer', doc: 'Restart ffmpeg when no frame arrives for this long', default: 10_000, min: 100, max: 600_000 },
  extraInputArgs: { kind: 'string-list', doc: 'Extra ffmpeg arguments placed before -i (env: a JSON array)', default: [] },
  path: {
    kind: 'string',
    doc: 'The ffmpeg executable ("" = ffmpeg on PATH; `inceptiond doctor` shows which one and its version)',
    default: '',
    empty: 'unset',
    pattern: /^[^\u0000-\u001f]*$/,
    rule: 'must be a file path or a command name',
  },
} satisfies Fields;

/** Size is one `-video_size`/`scale`: half of it would be ignored or make ffmpeg fail. */
function checkFfmpegValues(values: ValuesOf<typeof FFMPEG_FIELDS>): FieldProblem[] {
  const width = !isUnset(FFMPEG_FIELDS.width, values.width);
  const height = !isUnset(FFMPEG_FIELDS.height, values.height);
  if (width === height) return [];
  return width
    ? [{ key: 'width', value: values.width, reason: 'needs height as well (set both, or neither)' }]
    : [{ key: 'height', value: values.height, reason: 'needs width as well (set both, or neither)' }];
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
  /** Output size, both or neither (0 or absent = the source's). */
  width?: number;
  height?: number;
  /** 0 or absent = the source's rate. */
  fps?: number;
  /** No frame for this long (or after a restart) means ffmpeg has stalled: it is killed and restarted. */
  stallTimeoutMs: number;
  /** Inserted before `-i`, e.g. ['-rtsp_transport', 'udp']. */
  extraInputArgs?: string[];
  /** File inputs only: replay the file forever (-stream_loop -1). Default true. */
  loop?: boolean;
  /**
   * Restart backoff after ffmpeg exits or stalls: initial and maximum delay. From the source's
   * retryInitialMs/retryMaxMs when configured; defaults 1000 and 30000.
   */
  restartInitialMs?: number;
  restartMaxMs?: number;
  /** The ffmpeg executable: a path, or a name looked up on PATH. Default 'ffmpeg'. */
  ffmpegPath?: string;
}

type InputKind = 'lavfi' | 'device' | 'url' | 'file';

function inputKind(options: Pick<FfmpegSourceOptions, 'input' | 'inputFormat'>): InputKind {
  if (options.inputFormat === 'lavfi') return 'lavfi';
  if (options.input.startsWith('/dev/')) return 'device';
  if (URL_INPUT.test(options.input)) return 'url';
  return 'file';
}

/**
 * Throws a clear TypeError for options ffmpeg would misread or reject; returns them with the unset
 * values (0, "") as absent and the restart delays filled in.
 */
export function validateFfmpegOptions(
  options: FfmpegSourceOptions,
): FfmpegSourceOptions & { restartInitialMs: number; restartMaxMs: number } {
  const id = requireSourceId(options.id);
  const values = requireFields(id, 'ffmpeg', FFMPEG_FIELDS, { ...options, path: options.ffmpegPath }, checkFfmpegValues);
  if (options.loop !== undefined && typeof options.loop !== 'boolean') {
    throw new TypeError(`source "${id}": ffmpeg.loop must be true or false`);
  }
  const restart = requireFields(
    id,
    'ffmpeg',
    { restartInitialMs: COMMON_CAPTURE_FIELDS.retryInitialMs, restartMaxMs: COMMON_CAPTURE_FIELDS.retryMaxMs },
    options,
  );
  if (restart.restartMaxMs < restart.restartInitialMs) {
    throw new TypeError(
      `source "${id}": ffmpeg.restartMaxMs (${restart.restartMaxMs}) is below restartInitialMs (${restart.restartInitialMs})`,
    );
  }
  const set = <T>(field: (typeof FFMPEG_FIELDS)[keyof typeof FFMPEG_FIELDS], value: T): T | undefined =>
    isUnset(field, value) ? undefined : value;
  return {
    ...options,
    input: values.input,
    inputFormat: set(FFMPEG_FIELDS.inputFormat, values.inputFormat),
    width: set(FFMPEG_FIELDS.width, values.width),
    height: set(FFMPEG_FIELDS.height, values.height),
    fps: set(FFMPEG_FIELDS.fps, values.fps),
    stallTimeoutMs: values.stallTimeoutMs,
    extraInputArgs: values.extraInputArgs,
    ffmpegPath: set(FFMPEG_FIELDS.path, values.path),
    ...restart,
  };
}

/**
 * The ffmpeg argv (no shell) for these options; MJPEG frames on stdout.
 * - /dev/… : V4L2; inputFormat is the camera's format; size and rate are negotiated with the camera,
 *   and with inputFormat 'mjpeg' the camera's JPEGs are passed through without re-encoding.
 * - inputFormat 'lavfi': a filter graph (e.g. testsrc), read in real time.
 * - rtsp(s)://: over TCP (UDP loses packets and smears frames on busy Wi-Fi).
 * - other non-URL inputs are files, read in real time and looped unless loop is false.
 */
export function buildFfmpegArgs(options: FfmpegSourceOptions): string[] {
  const kind = inputKind(options);
  const extra = options.extraInputArgs ?? [];
  // 0 and absent both mean the source's own size and rate.
  const size = options.width && options.height ? `${options.width}x${options.height}` : undefined;
  const args = ['-hide_banner', '-nostdin', '-nostats', '-loglevel', 'error'];

  switch (kind) {
    case 'device':
      args.push('-f', 'v4l2');
      if (options.inputFormat) args.push('-input_format', options.inputFormat);
      if (size) args.push('-video_size', size);
      if (options.fps) args.push('-framerate', String(options.fps));
      break;
    case 'lavfi':
      args.push('-re', '-f', 'lavfi');
      break;
    case 'url':
      if (/^rtsps?:/i.test(options.input)) args.push('-rtsp_transport', 'tcp');
      if (options.inputFormat) args.push('-f', options.inputFormat);
      break;
    case 'file':
      if (options.loop ?? LOOP_DEFAULT) args.push('-stream_loop', '-1');
      args.push('-re');
      if (options.inputFormat) args.push('-f', options.inputFormat);
      break;
  }
  args.push(...extra, '-i', options.input, '-an');

  if (kind === 'device' && options.inputFormat === 'mjpeg') {
    args.push('-c:v', 'copy', '-f', 'mjpeg', 'pipe:1');
    return args;
  }
  const filters: string[] = [];
  if (kind !== 'device') {
    if (options.fps) filters.push(`fps=${options.fps}`);
    if (size) filters.push(`scale=${options.width}:${options.height}`);
  }
  if (filters.length > 0) args.push('-vf', filters.join(','));
  args.push('-c:v', 'mjpeg', '-q:v', '5', '-f', 'image2pipe', 'pipe:1');
  return args;
}

interface Waiter {
  resolve(frame: Frame): void;
  reject(error: Error): void;
}

/**
 * A long-running ffmpeg whose MJPEG output is split into frames; only the newest frame is kept
 * (replaced ones count as dropped). ffmpeg is restarted with capped exponential backoff when it exits
 * or stalls; a next() waiting at that moment rejects with a CaptureError carrying ffmpeg's last words.
 */
export class FfmpegSource implements FrameSource {
  readonly id: string;
  readonly backend = 'ffmpeg' as const;
  readonly args: readonly string[];
  private readonly options: FfmpegSourceOptions;
  private readonly logger: Logger;
  private readonly restartInitialMs: number;
  private readonly restartMaxMs: number;
  private child: ChildProcess | undefined;
  private childClosed: Promise<void> = Promise.resolve();
  private splitter = new JpegStreamSplitter();
  private latest: Frame | undefined;
  private waiter: Waiter | undefined;
  private stderrTail: string[] = [];
  private stderrPartial = '';
  private framesThisRun = 0;
  private restartDelayMs: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  private captureSeq = 0;
  private restarts = 0;
  private readonly counters: SourceStats = { captured: 0, failed: 0, dropped: 0 };

  private readonly ffmpegBin: string;

  constructor(options: FfmpegSourceOptions, logger: Logger) {
    const valid = validateFfmpegOptions(options);
    this.ffmpegBin = valid.ffmpegPath ?? 'ffmpeg';
    this.id = valid.id;
    this.options = valid;
    this.args = buildFfmpegArgs(valid);
    this.restartInitialMs = valid.restartInitialMs;
    this.restartMaxMs = valid.restartMaxMs;
    this.restartDelayMs = this.restartInitialMs;
    this.logger = logger.child({ source: this.id, backend: 'ffmpeg' });
  }

  async start(): Promise<void> {
    if (this.started && !this.stopped) return;
    this.started = true;
    this.stopped = false;
    this.restartDelayMs = this.restartInitialMs;
    this.spawnFfmpeg();
  }

  next(signal?: AbortSignal): Promise<Frame> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.stopped) return Promise.reject(new SourceStoppedError(this.id));
    if (!this.started) return Promise.reject(new Error(`ffmpeg source "${this.id}": next() before start()`));
    if (this.waiter) return Promise.reject(new Error(`ffmpeg source "${this.id}": next() called while another next() is pending`));
    if (this.latest) return Promise.resolve(this.takeLatest());
    const waiting = new Promise<Frame>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
    return raceAbort(waiting, signal).catch((error: unknown) => {
      // An abort leaves the waiter registered; clear it so the next call is not refused.
      if (signal?.aborted) this.waiter = undefined;
      throw error;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.stallTimer);
    this.rejectWaiter(new SourceStoppedError(this.id));
    this.latest = undefined;
    const child = this.child;
    if (child) {
      this.killChild(child, 'SIGTERM');
      await this.childClosed;
    }
    this.splitter.reset();
  }

  stats(): SourceStats {
    return { ...this.counters };
  }

  /** The running ffmpeg's process id, if one is running (diagnostics, tests). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** How often ffmpeg has been restarted since start(), for tests and diagnostics. */
  get restartCount(): number {
    return this.restarts;
  }

  private spawnFfmpeg(): void {
    this.splitter = new JpegStreamSplitter();
    this.stderrTail = [];
    this.stderrPartial = '';
    this.framesThisRun = 0;
    this.logger.debug({ args: this.args }, 'starting ffmpeg');
    const child = spawn(this.ffmpegBin, this.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let resolveClosed!: () => void;
    this.childClosed = new Promise<void>((resolve) => (resolveClosed = resolve));

    let ended = false;
    const end = (reason: string): void => {
      if (ended) return;
      ended = true;
      resolveClosed();
      this.onChildEnded(child, reason);
    };
    child.on('error', (error) => end(`cannot run ${this.ffmpegBin}: ${error.message}`));
    child.on('close', (code, signal) => end(signal ? `ffmpeg was killed by ${signal}` : `ffmpeg exited with code ${code}`));
    child.stdout!.on('data', (chunk: Buffer) => this.onStdout(child, chunk));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => this.onStderr(text));
    child.stdout!.on('error', () => undefined); // surfaced by 'close'
    child.stderr!.on('error', () => undefined);
    this.armStallTimer(child);
  }

  private onStdout(child: ChildProcess, chunk: Buffer): void {
    if (child !== this.child || this.stopped) return;
    for (const data of this.splitter.push(chunk)) {
      this.framesThisRun++;
      if (this.framesThisRun === 1) {
        this.restartDelayMs = this.restartInitialMs; // a working run resets the backoff
        this.logger.info('ffmpeg is delivering frames');
      }
      if (this.latest) this.counters.dropped++;
      this.latest = { sourceId: this.id, captureSeq: 0, capturedAt: new Date(), data };
      this.armStallTimer(child);
      if (this.waiter) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter.resolve(this.takeLatest());
      }
    }
  }

  private onStderr(text: string): void {
    const lines = (this.stderrPartial + text).split(/\r?\n/);
    this.stderrPartial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      this.stderrTail.push(line.trim());
      if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    }
  }

  private takeLatest(): Frame {
    const frame = { ...this.latest!, captureSeq: ++this.captureSeq };
    this.latest = undefined;
    this.counters.captured++;
    return frame;
  }

  private armStallTimer(child: ChildProcess): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => {
      if (child !== this.child || this.stopped) return;
      this.logger.warn({ stallTimeoutMs: this.options.stallTimeoutMs }, 'ffmpeg stalled: no frame in time, killing it');
      this.stallReason = `ffmpeg delivered no frame for ${this.options.stallTimeoutMs} ms`;
      this.killChild(child, 'SIGKILL');
    }, this.options.stallTimeoutMs);
  }

  private stallReason: string | undefined;

  private onChildEnded(child: ChildProcess, exitReason: string): void {
    if (child !== this.child) return;
    this.child = undefined;
    clearTimeout(this.stallTimer);
    if (this.stderrPartial.trim() !== '') this.stderrTail.push(this.stderrPartial.trim());
    const pending = this.splitter.reset();
    if (this.stopped) return;

    const reason = this.stallReason ?? exitReason;
    this.stallReason = undefined;
    const lastWords = this.stderrTail.at(-1);
    const message = `ffmpeg source "${this.id}" (${this.options.input}): ${reason}${lastWords ? `: ${lastWords}` : ''}`;
    const delay = this.restartDelayMs;
    this.restartDelayMs = Math.min(this.restartMaxMs, Math.max(1, this.restartDelayMs * 2));
    this.counters.failed++;
    this.logger.warn(
      { reason, stderr: this.stderrTail.join('\n'), framesThisRun: this.framesThisRun, partialBytesDropped: pending, restartInMs: delay },
      'ffmpeg ended; restarting',
    );
    this.rejectWaiter(new CaptureError(message, this.id));
    this.restartTimer = setTimeout(() => {
      if (this.stopped) return;
      this.restarts++;
      this.spawnFfmpeg();
    }, delay);
  }

  private rejectWaiter(error: Error): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }

  private killChild(child: ChildProcess, signal: NodeJS.Signals): void {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    if (signal !== 'SIGKILL') {
      const escalate = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }, KILL_GRACE_MS);
      escalate.unref();
      child.once('close', () => clearTimeout(escalate));
    }
  }
}

export const ffmpegBackend = defineBackend({
  summary: 'one long-running stream',
  fields: FFMPEG_FIELDS,
  check: checkFfmpegValues,
  toOptions: ({ path, ...values }, source): FfmpegSourceOptions => ({
    backend: 'ffmpeg',
    id: source.id,
    intervalMs: source.intervalMs,
    ...values,
    ffmpegPath: path,
    // One set of delays per source: the runner's retries and ffmpeg's own restarts back off alike.
    restartInitialMs: source.retryInitialMs,
    restartMaxMs: source.retryMaxMs,
  }),
  create: (options, logger) => new FfmpegSource(options, logger),
});
