import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { glob, isDynamicPattern } from 'tinyglobby';
import { raceAbort } from './abort.js';
import { defineBackend } from './backend.js';
import { requireFields, type Fields } from './fields.js';
import { jpegProblem } from './jpeg.js';
import {
  CaptureError,
  CorruptFrameError,
  SourceExhaustedError,
  SourceStoppedError,
  type CommonSourceOptions,
  type Frame,
  type FrameSource,
  type SourceStats,
} from './types.js';
import { requireSourceId } from './validate.js';

export const FILES_FIELDS = {
  path: {
    kind: 'string',
    doc: 'Folder or glob of images (backend files)',
    default: '',
    empty: 'required',
    pattern: /\S/,
    rule: 'must be a folder or glob',
  },
  loop: { kind: 'boolean', doc: 'Start again at the first image after the last one', default: true },
} satisfies Fields;

export interface FilesSourceOptions extends CommonSourceOptions {
  backend: 'files';
  /** A folder (its image files, not recursive) or a glob such as `dir/*.jpg` or `dir/**\/*.png`. */
  path: string;
  /** Start again from the first image after the last; otherwise next() rejects with SourceExhaustedError. */
  loop: boolean;
}

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp']);

/**
 * "frame2" before "frame10": files written by cameras and scripts are usually numbered without
 * padding. Runs of digits compare by value; other characters by class as a collator orders them
 * (spaces, then punctuation, then digits, then letters, case-insensitively); exact ties then by code
 * point, so the order is total. Not Intl.Collator: its collation data cost the daemon 3.3 MB of
 * resident memory, for every source, as it was built when this module loaded.
 */
export function naturalOrder(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (isDigit(a, i) && isDigit(b, j)) {
      let ei = i;
      let ej = j;
      while (ei < a.length && isDigit(a, ei)) ei++;
      while (ej < b.length && isDigit(b, ej)) ej++;
      const x = a.slice(i, ei).replace(/^0+(?=\d)/, '');
      const y = b.slice(j, ej).replace(/^0+(?=\d)/, '');
      if (x.length !== y.length) return x.length - y.length;
      if (x !== y) return x < y ? -1 : 1;
      i = ei;
      j = ej;
      continue;
    }
    const d = charRank(a, i) - charRank(b, j);
    if (d !== 0) return d;
    i++;
    j++;
  }
  if (i < a.length || j < b.length) return i < a.length ? 1 : -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function isDigit(s: string, i: number): boolean {
  const c = s.charCodeAt(i);
  return c >= 48 && c <= 57;
}

/** Spaces < punctuation and symbols < digits < letters (case folded) < the rest, by code point within each. */
function charRank(s: string, i: number): number {
  const c = s.charCodeAt(i);
  const lower = c >= 65 && c <= 90 ? c + 32 : c;
  if (c === 32 || c === 9) return c;
  if (lower >= 97 && lower <= 122) return 0x30000 + lower;
  if (c >= 48 && c <= 57) return 0x20000 + c;
  if (c < 128) return 0x10000 + c;
  return 0x40000 + c;
}

function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase());
}

/** What the bytes say the file is; undefined when they are not an image format we pass on. */
function imageFormatOf(data: Buffer): 'jpeg' | 'png' | 'webp' | undefined {
  if (data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'jpeg';
  if (data.length >= 8 && data.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return 'png';
  }
  if (data.length >= 12 && data.toString('latin1', 0, 4) === 'RIFF' && data.toString('latin1', 8, 12) === 'WEBP') {
    return 'webp';
  }
  return undefined;
}

/**
 * Images from a folder or glob, in natural name order, one file read per next(). The list is taken at
 * start() and again at each pass, so files added to a looping folder are picked up.
 * Non-image names are skipped; a file that cannot be read or is not a whole image is a CaptureError
 * (the cursor moves on, so a retry gets the next file).
 */
export class FilesSource implements FrameSource {
  readonly id: string;
  readonly backend = 'files' as const;
  private readonly options: FilesSourceOptions;
  private readonly logger: Logger;
  private files: string[] = [];
  private cursor = 0;
  private started = false;
  private stopped = false;
  private busy = false;
  /** Aborted by stop(): a pending next() rejects with SourceStoppedError, its read is not counted. */
  private stopping = new AbortController();
  private captureSeq = 0;
  private readonly counters: SourceStats = { captured: 0, failed: 0, dropped: 0 };

  constructor(options: FilesSourceOptions, logger: Logger) {
    this.id = requireSourceId(options.id);
    this.options = { ...options, ...requireFields(this.id, 'files', FILES_FIELDS, options) };
    this.logger = logger.child({ source: this.id, backend: 'files' });
  }

  async start(): Promise<void> {
    if (!isDynamicPattern(this.options.path)) {
      try {
        await stat(this.options.path);
      } catch (error) {
        throw new CaptureError(`files source "${this.id}": cannot read ${this.options.path}: ${(error as Error).message}`, this.id, {
          cause: error,
        });
      }
    }
    this.files = await this.list();
    this.cursor = 0;
    this.stopping = new AbortController();
    this.started = true;
    this.stopped = false;
    const info = { path: this.options.path, images: this.files.length, loop: this.options.loop };
    if (this.files.length === 0) this.logger.warn(info, 'files source started, but no images match yet');
    else this.logger.info(info, 'files source started');
  }

  async next(signal?: AbortSignal): Promise<Frame> {
    signal?.throwIfAborted();
    if (this.stopped) throw new SourceStoppedError(this.id);
    if (!this.started) throw new Error(`files source "${this.id}": next() before start()`);
    if (this.busy) throw new Error(`files source "${this.id}": next() called while another next() is pending`);
    this.busy = true;
    const stopping = this.stopping.signal;
    try {
      return await raceAbort(raceAbort(this.readNext(stopping), stopping), signal);
    } catch (error) {
      if (error instanceof CaptureError) this.counters.failed++;
      throw error;
    } finally {
      this.busy = false;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.files = [];
    this.stopping.abort(new SourceStoppedError(this.id));
  }

  stats(): SourceStats {
    return { ...this.counters };
  }

  private async readNext(stopping: AbortSignal): Promise<Frame> {
    if (this.cursor >= this.files.length) {
      if (!this.options.loop) throw new SourceExhaustedError(this.id);
      this.files = await this.list();
      this.cursor = 0;
      if (this.files.length === 0) {
        throw new CaptureError(`files source "${this.id}": no images match ${this.options.path}`, this.id);
      }
    }
    const file = this.files[this.cursor++]!;
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (error) {
      throw new CaptureError(`files source "${this.id}": cannot read ${file}: ${(error as Error).message}`, this.id, {
        cause: error,
      });
    }
    const format = imageFormatOf(data);
    const problem = format === undefined ? 'not a JPEG, PNG or WebP image' : format === 'jpeg' ? jpegProblem(data) : undefined;
    if (problem) {
      throw new CorruptFrameError(`files source "${this.id}": ${file}: ${problem}`, this.id);
    }
    // Stopped meanwhile: the caller has had its SourceStoppedError; this frame reaches no one.
    stopping.throwIfAborted();
    this.counters.captured++;
    return { sourceId: this.id, captureSeq: ++this.captureSeq, capturedAt: new Date(), data };
  }

  private async list(): Promise<string[]> {
    const target = this.options.path;
    let candidates: string[];
    try {
      if (isDynamicPattern(target)) {
        candidates = await glob(target, { absolute: true, onlyFiles: true, expandDirectories: false });
      } else if ((await stat(target)).isDirectory()) {
        const entries = await readdir(target, { withFileTypes: true });
        candidates = entries.filter((entry) => entry.isFile() || entry.isSymbolicLink()).map((entry) => path.resolve(target, entry.name));
      } else {
        candidates = [path.resolve(target)];
      }
    } catch (error) {
      throw new CaptureError(`files source "${this.id}": cannot list ${target}: ${(error as Error).message}`, this.id, {
        cause: error,
      });
    }
    const images = candidates.filter(isImageName);
    const skipped = candidates.length - images.length;
    if (skipped > 0) this.logger.debug({ skipped }, 'skipped files that are not images by name');
    return images.sort(naturalOrder);
  }
}

export const filesBackend = defineBackend({
  summary: 'images from disk',
  fields: FILES_FIELDS,
  toOptions: (values, source): FilesSourceOptions => ({ backend: 'files', id: source.id, intervalMs: source.intervalMs, ...values }),
  create: (options, logger) => new FilesSource(options, logger),
});
