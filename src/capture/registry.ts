// The capture backends, one row each. The configuration's `capture.<backend>.*` keys, the backend enum,
// the config types and the mapping from a configured source to a FrameSource all come from this table:
// a new backend (libcamera, GStreamer) is one file exporting a CaptureBackendDefinition and one row here.
import type { Logger } from 'pino';
import type { BackendSourceContext, CaptureBackendDefinition } from './backend.js';
import { ffmpegBackend } from './ffmpeg-source.js';
import { missingRequired, type CommonCaptureValues, type FieldProblem, type Fields, type ValuesOf } from './fields.js';
import { filesBackend } from './files-source.js';
import type { CaptureRunnerOptions } from './runner.js';
import type { FrameSource } from './types.js';
import { webcamBackend } from './webcam-source.js';

/** In the order of the configuration's groups (and of the README's table). */
export const CAPTURE_BACKEND_TABLE = {
  files: filesBackend,
  webcam: webcamBackend,
  ffmpeg: ffmpegBackend,
} as const;

export type CaptureBackend = keyof typeof CAPTURE_BACKEND_TABLE;
export const CAPTURE_BACKENDS = Object.keys(CAPTURE_BACKEND_TABLE) as readonly CaptureBackend[];
/** A source with no backend configured uses this one. */
export const DEFAULT_CAPTURE_BACKEND: CaptureBackend = 'webcam';

type Row<B extends CaptureBackend> = (typeof CAPTURE_BACKEND_TABLE)[B];
/** The values of `capture.<B>.*`. */
export type BackendValues<B extends CaptureBackend> = ValuesOf<Row<B>['fields']>;
/** The options `B`'s FrameSource is created with. */
export type BackendOptions<B extends CaptureBackend> = Parameters<Row<B>['create']>[0];
export type SourceOptions = { [B in CaptureBackend]: BackendOptions<B> }[CaptureBackend];

/** What `capture` holds, and each `sources` entry besides its id. */
export type CaptureSettings = CommonCaptureValues & { backend: CaptureBackend } & { [B in CaptureBackend]: BackendValues<B> };
/** One configured source (config's SourceConfig). */
export type CaptureSourceConfig = CaptureSettings & { id: string };

/** The row of `backend` with its types widened, for code that handles any backend. */
function row(backend: string): CaptureBackendDefinition<Fields, SourceOptions> {
  if (!Object.hasOwn(CAPTURE_BACKEND_TABLE, backend)) {
    throw new TypeError(`unknown capture backend ${JSON.stringify(backend)} (expected ${CAPTURE_BACKENDS.join(', ')})`);
  }
  return CAPTURE_BACKEND_TABLE[backend as CaptureBackend] as unknown as CaptureBackendDefinition<Fields, SourceOptions>;
}

/** `capture.backend`'s doc: each backend with its summary. */
export function describeCaptureBackends(): string {
  const parts = CAPTURE_BACKENDS.map((name) => `${name} (${CAPTURE_BACKEND_TABLE[name].summary})`);
  return parts.length > 1 ? `${parts.slice(0, -1).join(', ')} or ${parts.at(-1)}` : parts.join('');
}

/**
 * What `backend` cannot run with beyond per-key ranges: required keys left empty and checks across its
 * keys. `key` is relative to the group (`width`, not `capture.ffmpeg.width`).
 */
export function backendProblems(backend: CaptureBackend, values: Readonly<Record<string, unknown>>): FieldProblem[] {
  const { fields, check } = row(backend);
  const required = missingRequired(fields, values).map((p) => ({ ...p, reason: `is required when the backend is ${backend}` }));
  return [...required, ...(check?.(values as ValuesOf<Fields>) ?? [])];
}

/** A configured source → its backend's options. */
export function toSourceOptions(source: CaptureSourceConfig, context: { runtimeDir: string }): SourceOptions {
  const { id, intervalMs, retryInitialMs, retryMaxMs } = source;
  const values = source[source.backend] as ValuesOf<Fields>;
  return row(source.backend).toOptions(values, {
    id,
    intervalMs,
    retryInitialMs,
    retryMaxMs,
    runtimeDir: context.runtimeDir,
  } satisfies BackendSourceContext);
}

/** The FrameSource for `options.backend`; throws a TypeError for invalid options. */
export function createSource(options: SourceOptions, logger: Logger): FrameSource {
  return row((options as { backend: string }).backend).create(options, logger);
}

/** The FrameSource of a configured source; throws a TypeError for invalid settings. */
export function sourceFromConfig(source: CaptureSourceConfig, opts: { runtimeDir: string }, logger: Logger): FrameSource {
  return createSource(toSourceOptions(source, opts), logger);
}

/** The CaptureRunner options of a configured source: its own interval and retry delays. */
export function runnerOptionsFor(source: CaptureSourceConfig, logger: Logger): CaptureRunnerOptions {
  return { intervalMs: source.intervalMs, retryInitialMs: source.retryInitialMs, retryMaxMs: source.retryMaxMs, logger };
}
