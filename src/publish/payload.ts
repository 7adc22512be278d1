/**
 * Payload contracts (docs/ARCHITECTURE.md, "Contracts"): the Result published on `<base>/<source>/labels`, the retained
 * status, and the request/response envelope. `validateResult` is the executable form of the
 * contract; tests (ours and the integrator's) check published payloads with it.
 */

export type Precision = 'fp32' | 'fp16' | 'int8';
const PRECISIONS: readonly string[] = ['fp32', 'fp16', 'int8'];

export interface ResultLabel {
  index: number;
  label: string;
  /** Probability in [0, 1]. */
  score: number;
}

export interface Result {
  seq: number;
  /** UTC ISO-8601, when the Result was produced. */
  ts: string;
  source: string;
  frame: { capturedAt: string; width: number; height: number };
  model: { name: string; precision: Precision };
  provider: string;
  /** Highest score first. */
  labels: ResultLabel[];
  latencyMs: { preprocess: number; inference: number; total: number };
}

/**
 * `offline` is the broker's will (a crash, a lost link); `stopped` is a clean stop, so monitoring can
 * tell an operator's stop from a failure.
 */
export type StatusState = 'online' | 'degraded' | 'offline' | 'stopped';

/** Retained on `<base>/status`. The daemon owns the fields; the publisher only sends them. */
export interface StatusPayload {
  state: StatusState;
  version?: string;
  model?: string;
  provider?: string;
  /** UTC ISO-8601 time of the last state change. */
  since?: string;
  error?: string;
  /** Per-source health, e.g. `{ camera: { state: 'online' } }`. */
  sources?: Record<string, unknown>;
  [field: string]: unknown;
}

export type ResponsePayload =
  | { status: 'ok'; data?: unknown; transaction?: string | number }
  | { status: 'error'; error: string; transaction?: string | number };

export interface ResultInput {
  seq: number;
  source: string;
  frame: { capturedAt: Date | string | number; width: number; height: number };
  model: { name: string; precision: Precision };
  provider: string;
  labels: ResultLabel[];
  latencyMs: { preprocess: number; inference: number; total: number };
  /** When the Result was produced; defaults to now. */
  ts?: Date | string | number;
}

export class PayloadError extends Error {
  override name = 'PayloadError';
  constructor(readonly errors: string[]) {
    super(`invalid Result: ${errors.join('; ')}`);
  }
}

/** Builds a Result in the exact contract shape; throws PayloadError when the input breaks it. */
export function buildResult(input: ResultInput): Result {
  const result: Result = {
    seq: input.seq,
    ts: toIso(input.ts ?? Date.now()),
    source: input.source,
    frame: { capturedAt: toIso(input.frame.capturedAt), width: input.frame.width, height: input.frame.height },
    model: { name: input.model.name, precision: input.model.precision },
    provider: input.provider,
    labels: input.labels.map((l) => ({ index: l.index, label: l.label, score: l.score })),
    latencyMs: {
      preprocess: input.latencyMs.preprocess,
      inference: input.latencyMs.inference,
      total: input.latencyMs.total,
    },
  };
  const check = validateResult(result);
  if (!check.ok) throw new PayloadError(check.errors);
  return result;
}

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: string[] };

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const RESULT_KEYS = ['seq', 'ts', 'source', 'frame', 'model', 'provider', 'labels', 'latencyMs'];

/** Checks any value (e.g. a parsed MQTT payload) against the Result contract, listing every violation. */
export function validateResult(value: unknown): Validation<Result> {
  const errors: string[] = [];
  if (!isObject(value)) return { ok: false, errors: ['Result must be a JSON object'] };
  exactKeys(value, RESULT_KEYS, 'Result', errors);
  if (!Number.isSafeInteger(value.seq) || (value.seq as number) < 0) errors.push('seq must be a non-negative integer');
  isoField(value.ts, 'ts', errors);
  if (typeof value.source !== 'string' || value.source.length === 0) errors.push('source must be a non-empty string');
  if (typeof value.provider !== 'string' || value.provider.length === 0) errors.push('provider must be a non-empty string');

  if (!isObject(value.frame)) errors.push('frame must be an object');
  else {
    exactKeys(value.frame, ['capturedAt', 'width', 'height'], 'frame', errors);
    isoField(value.frame.capturedAt, 'frame.capturedAt', errors);
    positiveInt(value.frame.width, 'frame.width', errors);
    positiveInt(value.frame.height, 'frame.height', errors);
  }

  if (!isObject(value.model)) errors.push('model must be an object');
  else {
    exactKeys(value.model, ['name', 'precision'], 'model', errors);
    if (typeof value.model.name !== 'string' || value.model.name.length === 0) errors.push('model.name must be a non-empty string');
    if (typeof value.model.precision !== 'string' || !PRECISIONS.includes(value.model.precision)) {
      errors.push(`model.precision must be one of ${PRECISIONS.join(', ')}`);
    }
  }

  if (!Array.isArray(value.labels)) errors.push('labels must be an array');
  else {
    let previous = Infinity;
    for (const [i, label] of (value.labels as unknown[]).entries()) {
      const at = `labels[${i}]`;
      if (!isObject(label)) {
        errors.push(`${at} must be an object`);
        continue;
      }
      exactKeys(label, ['index', 'label', 'score'], at, errors);
      if (!Number.isSafeInteger(label.index) || (label.index as number) < 0) errors.push(`${at}.index must be a non-negative integer`);
      if (typeof label.label !== 'string') errors.push(`${at}.label must be a string`);
      const score = label.score;
      if (typeof score !== 'number' || !Number.isFinite(score) || score < 0 || score > 1) {
        errors.push(`${at}.score must be a number in [0, 1]`);
      } else {
        if (score > previous) errors.push(`${at}.score is higher than the label before it (labels must be sorted by score)`);
        previous = score;
      }
    }
  }

  if (!isObject(value.latencyMs)) errors.push('latencyMs must be an object');
  else {
    exactKeys(value.latencyMs, ['preprocess', 'inference', 'total'], 'latencyMs', errors);
    for (const key of ['preprocess', 'inference', 'total']) {
      const ms = value.latencyMs[key];
      if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) errors.push(`latencyMs.${key} must be a non-negative number`);
    }
  }
  return errors.length === 0 ? { ok: true, value: value as unknown as Result } : { ok: false, errors };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function exactKeys(obj: Record<string, unknown>, keys: string[], what: string, errors: string[]): void {
  for (const key of Object.keys(obj)) if (!keys.includes(key)) errors.push(`${what} has an unknown field "${key}"`);
  for (const key of keys) if (!(key in obj)) errors.push(`${what} is missing "${key}"`);
}

function isoField(value: unknown, what: string, errors: string[]): void {
  if (typeof value !== 'string' || !ISO_UTC.test(value) || Number.isNaN(Date.parse(value))) {
    errors.push(`${what} must be a UTC ISO-8601 timestamp (e.g. 2026-11-28T05:03:14.123Z)`);
  }
}

function positiveInt(value: unknown, what: string, errors: string[]): void {
  if (!Number.isSafeInteger(value) || (value as number) <= 0) errors.push(`${what} must be a positive integer`);
}

function toIso(value: Date | string | number): string {
  const date = value instanceof Date ? value : new Date(value);
  // An invalid date is left as a marker string so validateResult reports the field instead of throwing a RangeError.
  return Number.isNaN(date.getTime()) ? `invalid date: ${String(value)}` : date.toISOString();
}
