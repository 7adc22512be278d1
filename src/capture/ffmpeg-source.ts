import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { raceAbort } from './abort.js';
import { JpegStreamSplitter } from './jpeg.js';
import {
  CaptureError,
  SourceStoppedError,
  type FfmpegSourceOptions,
  type Frame,
  type FrameSource,
  type SourceStats,
} from './types.js';
import { requireInteger, requireNumber, requireSourceId } from './validate.js';

export const FFMPEG_DEFAULTS = { restartInitialMs: 1000, restartMaxMs: 30_000, loop: true } as const;

/** Grace between SIGTERM and SIGKILL when stopping ffmpeg. */
const KILL_GRACE_MS = 2000;
const STDERR_TAIL_LINES = 20;
const URL_INPUT = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
const FORMAT_NAME = /^[A-Za-z0-9_]+$/;

type InputKind = 'lavfi' | 'device' | 'url' | 'file';

function inputKind(options: Pick<FfmpegSourceOptions, 'input' | 'inputFormat'>): InputKind {
  if (options.inputFormat === 'lavfi') return 'lavfi';
  if (options.input.startsWith('/dev/')) return 'device';
  if (URL_INPUT.test(options.input)) return 'url';
  return 'file';
}

/** Throws a clear TypeError for options ffmpeg would misread or reject. */
export function validateFfmpegOptions(options: FfmpegSourceOptions): void {
  const id = requireSourceId(options.id);
  const { input } = options;
  // eslint-disable-next-line no-control-regex
  if (typeof input !== 'string' || input.trim() === '' || /[\u0000-\u001f]/.test(input)) {
    throw new TypeError(`source "${id}": ffmpeg.input must be a device, URL or file, got ${JSON.stringify(input)}`);
  }
  if (input.startsWith('-')) {
    throw new TypeError(`source "${id}": ffmpeg.input must not start with "-" (ffmpeg would read it as an option): ${input}`);
  }
  if (options.inputFormat !== undefined && (typeof options.inputFormat !== 'string' || !FORMAT_NAME.test(options.inputFormat))) {
    throw new TypeError(`source "${id}": ffmpeg.inputFormat must be a format name such as mjpeg or lavfi, got ${JSON.stringify(options.inputFormat)}`);
  }
  if ((options.width === undefined) !== (options.height === undefined)) {
    throw new TypeError(`source "${id}": ffmpeg.width and ffmpeg.height must be given together`);
  }
  if (options.width !== undefined) requireInteger(id, 'ffmpeg.width', options.width, 16, 8192);
  if (options.height !== undefined) requireInteger(id, 'ffmpeg.height', options.height, 16, 8192);
  if (options.fps !== undefined) requireNumber(id, 'ffmpeg.fps', options.fps, 0.01, 240);
  requireInteger(id, 'ffmpeg.stallTimeoutMs', options.stallTimeoutMs, 100, 600_000);
  if (options.extraInputArgs !== undefined && (!Array.isArray(options.extraInputArgs) || !options.extraInputArgs.every((a) => typeof a === 'string'))) {
    throw new TypeError(`source "${id}": ffmpeg.extraInputArgs must be a list of strings`);
  }
  if (options.loop !== undefined && typeof options.loop !== 'boolean') {
    throw new TypeError(`source "${id}": ffmpeg.loop must be true or false`);
  }
  const initial = requireInteger(id, 'ffmpeg.restartInitialMs', options.restartInitialMs ?? FFMPEG_DEFAULTS.restartInitialMs, 0, 3_600_000);
  const max = requireInteger(id, 'ffmpeg.restartMaxMs', options.restartMaxMs ?? FFMPEG_DEFAULTS.restartMaxMs, 0, 3_600_000);
  if (max < initial) throw new TypeError(`source "${id}": ffmpeg.restartMaxMs (${max}) is below restartInitialMs (${initial})`);
  // eslint-disable-next-line no-control-regex
  if (options.ffmpegPath !== undefined && (typeof options.ffmpegPath !== 'string' || /[\u0000-\u001f]/.test(options.ffmpegPath))) {
    throw new TypeError(`source "${id}": ffmpeg.path must be a file path or a command name, got ${JSON.stringify(options.ffmpegPath)}`);
  }
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
  const size = options.width !== undefined && options.height !== undefined ? `${options.width}x${options.height}` : undefined;
  const args = ['-hide_banner', '-nostdin', '-nostats', '-loglevel', 'error'];

  switch (kind) {
    case 'device':
      args.push('-f', 'v4l2');
      if (options.inputFormat) args.push('-input_format', options.inputFormat);
      if (size) args.push('-video_size', size);
      if (options.fps !== undefined) args.push('-framerate', String(options.fps));
      break;
    case 'lavfi':
      args.push('-re', '-f', 'lavfi');
      break;
    case 'url':
      if (/^rtsps?:/i.test(options.input)) args.push('-rtsp_transport', 'tcp');
      if (options.inputFormat) args.push('-f', options.inputFormat);
      break;
    case 'file':
      if (options.loop ?? FFMPEG_DEFAULTS.loop) args.push('-stream_loop', '-1');
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
    if (options.fps !== undefined) filters.push(`fps=${options.fps}`);
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
    validateFfmpegOptions(options);
    this.ffmpegBin = options.ffmpegPath || 'ffmpeg';
    this.id = options.id;
    this.options = options;
    this.args = buildFfmpegArgs(options);
    this.restartInitialMs = options.restartInitialMs ?? FFMPEG_DEFAULTS.restartInitialMs;
    this.restartMaxMs = options.restartMaxMs ?? FFMPEG_DEFAULTS.restartMaxMs;
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
