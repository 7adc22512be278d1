import type { Logger } from 'pino';
import type { CommonCaptureValues, FieldProblem, Fields, ValuesOf } from './fields.js';
import type { CommonSourceOptions, FrameSource } from './types.js';

/** What a backend's mapping gets from the configured source besides its own group of keys. */
export interface BackendSourceContext extends CommonCaptureValues {
  id: string;
  /** Where temporary capture files go ($RUNTIME_DIRECTORY under systemd). */
  runtimeDir: string;
}

/**
 * One capture backend, as one row of the registry (registry.ts): everything the configuration and the
 * daemon need to know about it. A new backend is a file exporting one of these plus a row in the table.
 */
export interface CaptureBackendDefinition<F extends Fields, O extends CommonSourceOptions & { backend: string }> {
  /** For `capture.backend`'s doc: "webcam (fswebcam, one process per frame)" says "fswebcam, …". */
  summary: string;
  /** The keys of `capture.<backend>.*` (and `sources[i].<backend>.*`). */
  fields: F;
  /** Checks across keys of the group (e.g. width needs height); per-key ranges come from `fields`. */
  check?(values: ValuesOf<F>): FieldProblem[];
  /** A configured source's values → this backend's options. */
  toOptions(values: ValuesOf<F>, source: BackendSourceContext): O;
  /** The FrameSource; throws a TypeError for invalid options. */
  create(options: O, logger: Logger): FrameSource;
}

/** Identity, so a backend file gets its field and option types inferred and checked. */
export function defineBackend<F extends Fields, O extends CommonSourceOptions & { backend: string }>(
  definition: CaptureBackendDefinition<F, O>,
): CaptureBackendDefinition<F, O> {
  return definition;
}
