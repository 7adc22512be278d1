import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { raceAbort } from './abort.js';
import { defineBackend } from './backend.js';
import { requireFields, type Fields } from './fields.js';
import { jpegProblem } from './jpeg.js';
import {
  CaptureError,
  CorruptFrameError,
  SourceStoppedError,
  type CommonSourceOptions,
  type Frame,
  type FrameSource,
  type SourceStats,
} from './types.js';
import { requireSourceId } from './validate.js';

/** The slice of node-webcam (CommonJS, untyped) this module uses. */
interface FsWebcamInstance {
  bin: string;
  capture(location: string, callback: (error: Error | null, location?: string) => void): void;
  runCaptureValidations(stderr: string): Error | null;
}
interface NodeWebcamModule {
  FSWebcam: new (options: Record<string, unknown>) => FsWebcamInstance;
}
// Loaded at the first capture: the configuration reads this module's fields without running a camera.
let nodeWebcam: NodeWebcamModule | undefined;
function loadNodeWebcam(): NodeWebcamModule {
  nodeWebcam ??= createRequire(import.meta.url)('node-webcam') as NodeWebcamModule;
  return nodeWebcam;
}

/**
 * node-webcam pastes every option into one /bin/sh command line, so each value must be harmless there:
 * plain device paths (by-id/by-path names contain ":" "." "+" "-"; no ".." segment), plain absolute
 * directories.
 */
const DEVICE_PATH = /^(?!.*\.\.)\/dev\/[A-Za-z0-9._:+-]+(\/[A-Za-z0-9._:+-]+)*$/;
const SAFE_DIR = /^\/([A-Za-z0-9._+-]+\/?)*$/;

/**
 * Why `dir` cannot hold webcam captures, or undefined: node-webcam pastes the output path into a shell
 * command, so only a plain absolute path is accepted.
 */
export function webcamTmpDirProblem(dir: string): string | undefined {
  const resolved = path.resolve(dir);
  if (SAFE_DIR.test(resolved) && !resolved.includes('..')) return undefined;
  return 'must be a path of letters, digits and "._+-/" only when a source uses the webcam backend (fswebcam writes its captures there)';
}
const SAFE_FILE = /^\/[A-Za-z0-9._+/-]+\.jpg$/;

/** Seconds coreutils `timeout` waits after SIGTERM before SIGKILL. */
const KILL_AFTER_S = 2;
/** Extra time the JS-side timer gives `timeout` to kill and reap before next() settles on its own. */
const JS_TIMER_GRACE_MS = 1000;
const TMP_PREFIX = 'inceptiond-';

/** The keys of `capture.webcam.*`: what fswebcam accepts, so the configuration refuses the rest. */
export const WEBCAM_FIELDS = {
  device: {
    kind: 'string',
    doc: 'V4L2 device (backend webcam)',
    default: '/dev/video0',
    pattern: DEVICE_PATH,
    rule: 'must be a plain device path such as /dev/video0 or /dev/v4l/by-id/…',
  },
  width: { kind: 'integer', doc: 'Capture width in pixels', default: 640, min: 16, max: 8192 },
  height: { kind: 'integer', doc: 'Capture height in pixels', default: 480, min: 16, max: 8192 },
  skipFrames: { kind: 'integer', doc: 'Frames discarded before the one kept, so auto-exposure can settle', default: 2, min: 0, max: 1000 },
  // fswebcam's --jpeg takes 0–95; libjpeg reads 0 as 1, so 1 is the lowest that means anything.
  jpegQuality: { kind: 'integer', doc: 'JPEG quality of the captured frame', default: 90, min: 1, max: 95 },
  timeoutMs: {
    kind: 'integer',
    doc: 'A capture taking longer is killed and counted as a failure',
    default: 10_000,
    min: 100,
    max: 600_000,
  },
} satisfies Fields;

export interface WebcamSourceOptions extends CommonSourceOptions {
  backend: 'webcam';
  /** V4L2 device path, e.g. /dev/video0 or /dev/v4l/by-id/usb-…-video-index0. */
  device: string;
  width: number;
  height: number;
  /** Frames fswebcam grabs and discards first so exposure can settle (--skip). Default 2. */
  skipFrames?: number;
  /** fswebcam --jpeg factor, 1–95. Default 90. */
  jpegQuality?: number;
  /** Per-capture limit; a hung fswebcam is killed. Default 10000. */
  timeoutMs?: number;
  /**
   * Where each capture's temporary JPEG is written (and deleted), e.g. $RUNTIME_DIRECTORY; relative paths
   * are resolved against the working directory. Default os.tmpdir().
   */
  tmpDir?: string;
}

/**
 * Debian's fswebcam (20140113) exits 0 when it fails; these stderr texts mean no image was captured.
 * With -q it prints only errors, so other stderr text next to a valid JPEG is logged, not failed.
 */
const FATAL_STDERR = [
  /no such file or directory/i,
  /timed out waiting for frame/i,
  /no frames captured/i,
  /device or resource busy/i,
  /unable to find a compatible palette format/i,
  /error opening device/i,
  /error selecting input/i,
  /unable to open/i,
  /unable to query/i,
  /not a video4linux device/i,
];

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]/g;

/** Plain one-line text from fswebcam's coloured stderr. */
export function cleanStderr(text: string): string {
  return text
    .replace(ANSI, '')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .join('; ');
}

interface ExecError extends Error {
  code?: number | string;
  killed?: boolean;
  signal?: NodeJS.Signals | null;
}

type ExecOutcome = { kind: 'done'; error: ExecError | null; stderr: string } | { kind: 'js-timeout' };

/**
 * One fswebcam process per frame through node-webcam, output to a unique file in tmpDir that is always
 * deleted. Failures that fswebcam reports with exit 0 (stderr text, no file, empty or non-JPEG file)
 * and hangs (killed by coreutils `timeout`) become CaptureErrors.
 * Captures are serialised: a V4L2 device takes one reader at a time.
 */
export class WebcamSource implements FrameSource {
  readonly id: string;
  readonly backend = 'webcam' as const;
  private readonly device: string;
  private readonly width: number;
  private readonly height: number;
  private readonly skipFrames: number;
  private readonly jpegQuality: number;
  private readonly timeoutMs: number;
  private readonly tmpDir: string;
  private readonly logger: Logger;
  private started = false;
  private stopped = false;
  /** Aborted by stop(), so a next() waiting on fswebcam rejects at once with SourceStoppedError. */
  private stopping = new AbortController();
  private inflight: Promise<unknown> | undefined;
  private captureSeq = 0;
  private readonly counters: SourceStats = { captured: 0, failed: 0, dropped: 0 };

  constructor(options: WebcamSourceOptions, logger: Logger) {
    this.id = requireSourceId(options.id);
    const id = this.id;
    const values = requireFields(id, 'webcam', WEBCAM_FIELDS, options);
    this.device = values.device;
    this.width = values.width;
    this.height = values.height;
    this.skipFrames = values.skipFrames;
    this.jpegQuality = values.jpegQuality;
    this.timeoutMs = values.timeoutMs;
    const rawTmpDir: unknown = options.tmpDir ?? os.tmpdir();
    // Relative paths are resolved against the working directory; the result is pasted into the shell.
    const tmpDir = typeof rawTmpDir === 'string' && rawTmpDir !== '' ? path.resolve(rawTmpDir) : '';
    if (!SAFE_DIR.test(tmpDir) || tmpDir.includes('..')) {
      throw new TypeError(
        `source "${id}": webcam.tmpDir must be a path of letters, digits and "._+-/" only, got ${JSON.stringify(rawTmpDir)}${tmpDir && tmpDir !== rawTmpDir ? ` (resolved to ${tmpDir})` : ''}`,
      );
    }
    this.tmpDir = tmpDir;
    this.logger = logger.child({ source: id, backend: 'webcam', device: this.device });
  }

  /** The command node-webcam runs in place of plain `fswebcam`: coreutils kills a hung capture. */
  get fswebcamCommand(): string {
    return `timeout --kill-after=${KILL_AFTER_S}s ${this.timeoutMs / 1000}s fswebcam`;
  }

  async start(): Promise<void> {
    try {
      // Outside systemd (no RuntimeDirectory) the configured folder may not exist yet.
      await mkdir(this.tmpDir, { recursive: true });
      if (!(await stat(this.tmpDir)).isDirectory()) throw new Error('not a directory');
      await access(this.tmpDir, constants.W_OK);
    } catch (error) {
      throw new CaptureError(
        `webcam "${this.id}": tmpDir ${this.tmpDir} is not a writable directory: ${(error as Error).message}`,
        this.id,
        {
          cause: error,
        },
      );
    }
    await this.removeStaleFiles();
    this.stopping = new AbortController();
    this.started = true;
    this.stopped = false;
    this.logger.info({ width: this.width, height: this.height, tmpDir: this.tmpDir }, 'webcam source started');
  }

  async next(signal?: AbortSignal): Promise<Frame> {
    signal?.throwIfAborted();
    if (this.stopped) throw new SourceStoppedError(this.id);
    if (!this.started) throw new Error(`webcam source "${this.id}": next() before start()`);
    const stopping = this.stopping.signal;
    const settle = <T>(promise: Promise<T>): Promise<T> => raceAbort(raceAbort(promise, stopping), signal);
    // An aborted capture may still hold the device; wait for it rather than fail with "busy".
    while (this.inflight) await settle(this.inflight.catch(() => undefined));
    if (this.stopped) throw new SourceStoppedError(this.id);
    const capture = this.capture();
    this.inflight = capture;
    capture.then(
      () => (this.inflight = undefined),
      () => (this.inflight = undefined),
    );
    return settle(capture);
  }

  async stop(): Promise<void> {
    // A capture in flight finishes (bounded by timeoutMs) and deletes its own file; start() removes
    // any file left by a process that died mid-capture. Its caller is not kept waiting.
    this.stopped = true;
    this.stopping.abort(new SourceStoppedError(this.id));
  }

  stats(): SourceStats {
    return { ...this.counters };
  }

  private async capture(): Promise<Frame> {
    try {
      const frame = await this.captureOnce();
      this.counters.captured++;
      return frame;
    } catch (error) {
      this.counters.failed++;
      throw error;
    }
  }

  private async captureOnce(): Promise<Frame> {
    const location = path.join(this.tmpDir, `${TMP_PREFIX}${this.id}-${randomUUID()}.jpg`);
    if (!SAFE_FILE.test(location)) throw this.error(`unsafe temporary file name ${location}`);

    let stderr = '';
    const cam = new (loadNodeWebcam().FSWebcam)({
      width: this.width,
      height: this.height,
      quality: this.jpegQuality,
      delay: 0,
      skip: this.skipFrames,
      device: this.device,
      output: 'jpeg',
      callbackReturn: 'location',
      saveShots: false,
      verbose: false,
      setValues: {},
    });
    cam.bin = this.fswebcamCommand;
    // node-webcam's own check turns only "no such file" into a generic error and drops the stderr text.
    cam.runCaptureValidations = (text: string) => {
      stderr = text;
      return null;
    };

    const exec = new Promise<ExecOutcome>((resolve) => {
      try {
        cam.capture(location, (error) => resolve({ kind: 'done', error: error as ExecError | null, stderr }));
      } catch (error) {
        resolve({ kind: 'done', error: error as ExecError, stderr: '' });
      }
    });
    let timer: NodeJS.Timeout | undefined;
    const jsTimeout = new Promise<ExecOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'js-timeout' }), this.timeoutMs + KILL_AFTER_S * 1000 + JS_TIMER_GRACE_MS);
    });

    const outcome = await Promise.race([exec, jsTimeout]);
    clearTimeout(timer);
    try {
      if (outcome.kind === 'js-timeout') {
        // `timeout` should have killed fswebcam already; whenever it does finish, its file is removed.
        void exec.then(() => this.removeFile(location));
        throw this.error(`fswebcam did not finish within ${this.timeoutMs} ms`);
      }
      return await this.readResult(location, outcome.error, outcome.stderr);
    } finally {
      await this.removeFile(location);
    }
  }

  private async readResult(location: string, execError: ExecError | null, rawStderr: string): Promise<Frame> {
    if (execError) {
      const code = execError.code;
      if (code === 124 || code === 137 || execError.signal) {
        throw this.error(`fswebcam did not finish within ${this.timeoutMs} ms and was killed`, execError);
      }
      // exec's message is "Command failed: <command>\n<stderr>"; the command line is noise here.
      const detail = cleanStderr(execError.message.replace(/^Command failed:[^\n]*\n?/, ''));
      if (code === 127) {
        throw this.error(`fswebcam is not installed or not on PATH (apt install fswebcam)${detail ? `: ${detail}` : ''}`, execError);
      }
      throw this.error(`fswebcam exited with code ${String(code)}${detail ? `: ${detail}` : ''}`, execError);
    }
    const stderr = cleanStderr(rawStderr);
    if (FATAL_STDERR.some((pattern) => pattern.test(stderr))) throw this.error(`fswebcam failed: ${stderr}`);

    let data: Buffer;
    try {
      data = await readFile(location);
    } catch (error) {
      const reason =
        (error as NodeJS.ErrnoException).code === 'ENOENT'
          ? 'fswebcam wrote no image'
          : `cannot read the image: ${(error as Error).message}`;
      throw this.error(stderr ? `${reason}: ${stderr}` : reason, error);
    }
    const problem = jpegProblem(data);
    if (problem) {
      const message = `webcam "${this.id}" (${this.device}): fswebcam output rejected: ${problem}${stderr ? ` (${stderr})` : ''}`;
      // An empty file is fswebcam failing quietly; bytes that do not form a JPEG are one bad frame.
      throw data.length === 0 ? new CaptureError(message, this.id) : new CorruptFrameError(message, this.id);
    }
    if (stderr) this.logger.debug({ stderr }, 'fswebcam reported on stderr but wrote a valid image');
    return { sourceId: this.id, captureSeq: ++this.captureSeq, capturedAt: new Date(), data };
  }

  private error(reason: string, cause?: unknown): CaptureError {
    return new CaptureError(`webcam "${this.id}" (${this.device}): ${reason}`, this.id, cause === undefined ? undefined : { cause });
  }

  private async removeFile(file: string): Promise<void> {
    try {
      await unlink(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.logger.warn({ file, err: error }, 'could not delete a temporary capture file');
      }
    }
  }

  /** Files of this source left by a process that died mid-capture. */
  private async removeStaleFiles(): Promise<void> {
    // Exact shape, so "camera" never matches the files of a source called "camera-2".
    const prefix = `${TMP_PREFIX}${this.id}-`;
    const uuidJpg = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.jpg$/;
    const names = await readdir(this.tmpDir).catch(() => [] as string[]);
    const stale = names.filter((name) => name.startsWith(prefix) && uuidJpg.test(name.slice(prefix.length)));
    await Promise.all(stale.map((name) => this.removeFile(path.join(this.tmpDir, name))));
    if (stale.length > 0) this.logger.info({ removed: stale.length }, 'removed stale capture files');
  }
}

export const webcamBackend = defineBackend({
  summary: 'fswebcam, one process per frame',
  fields: WEBCAM_FIELDS,
  toOptions: (values, source): WebcamSourceOptions => ({
    backend: 'webcam',
    id: source.id,
    intervalMs: source.intervalMs,
    ...values,
    tmpDir: source.runtimeDir,
  }),
  create: (options, logger) => new WebcamSource(options, logger),
});
