/**
 * Plain descriptions of capture settings: the keys of `capture.*` and `capture.<backend>.*`, with their
 * doc, default and the values a backend accepts. The backends check their options with these, and
 * config/schema.ts turns them into convict leaves, so `config check` refuses exactly what a backend would
 * refuse at start. Nothing here imports anything: config may depend on this file without depending on
 * the rest of the daemon.
 */

interface FieldBase<T> {
  /** One line for the README's configuration table. */
  doc: string;
  default: T;
}

export interface IntegerField extends FieldBase<number> {
  kind: 'integer';
  min: number;
  max: number;
  /** A value outside [min, max] that means "not set" (0 = the source's own size). */
  unset?: number;
}

export interface NumberField extends FieldBase<number> {
  kind: 'number';
  min: number;
  max: number;
  unset?: number;
}

export interface BooleanField extends FieldBase<boolean> {
  kind: 'boolean';
}

export interface StringField extends FieldBase<string> {
  kind: 'string';
  /** A non-empty value must match this. */
  pattern?: RegExp;
  /** The pattern as a message says it: "must be …". */
  rule?: string;
  /**
   * What "" means: 'unset' (allowed: the backend's own default), 'required' (allowed as a key, but the
   * backend cannot run without a value). Without it "" is refused like any value off the pattern.
   */
  empty?: 'unset' | 'required';
}

export interface StringListField extends FieldBase<string[]> {
  kind: 'string-list';
}

export type Field = IntegerField | NumberField | BooleanField | StringField | StringListField;
export type Fields = Readonly<Record<string, Field>>;

export type ValueOf<F extends Pick<Field, 'kind'>> = F['kind'] extends 'boolean'
  ? boolean
  : F['kind'] extends 'string-list'
    ? string[]
    : F['kind'] extends 'string'
      ? string
      : number;

/** The values of a group of fields, as the configuration holds them. */
export type ValuesOf<F extends Fields> = { -readonly [K in keyof F]: ValueOf<F[K]> };

/** A problem with one value of a group; `key` is the field name within the group. */
export interface FieldProblem {
  key: string;
  value: unknown;
  reason: string;
}

/** Whether `value` is this field's "not set" value (0 for a size, "" for an optional string). */
export function isUnset(field: Field, value: unknown): boolean {
  if (field.kind === 'integer' || field.kind === 'number') return field.unset !== undefined && value === field.unset;
  if (field.kind === 'string') return field.empty !== undefined && value === '';
  return false;
}

function numberRule(field: IntegerField | NumberField): string {
  const what = field.kind === 'integer' ? 'a whole number' : 'a number';
  const range = `${what} from ${field.min} to ${field.max}`;
  return field.unset === undefined ? `must be ${range}` : `must be ${field.unset} or ${range}`;
}

/** Why `value` is not acceptable for `field` ("must be …"), or undefined when it is. */
export function fieldProblem(field: Field, value: unknown): string | undefined {
  switch (field.kind) {
    case 'integer':
    case 'number': {
      const ok =
        typeof value === 'number' &&
        (field.kind === 'integer' ? Number.isSafeInteger(value) : Number.isFinite(value)) &&
        (isUnset(field, value) || (value >= field.min && value <= field.max));
      return ok ? undefined : numberRule(field);
    }
    case 'boolean':
      return typeof value === 'boolean' ? undefined : 'must be true or false';
    case 'string-list':
      return Array.isArray(value) && value.every((v) => typeof v === 'string') ? undefined : 'must be a list of strings';
    case 'string': {
      const rule = field.rule ?? 'must be a non-empty string';
      if (typeof value !== 'string') return field.rule ?? 'must be a string';
      if (value === '') return field.empty === undefined ? rule : undefined;
      return field.pattern && !field.pattern.test(value) ? rule : undefined;
    }
  }
}

/** Fields whose value the backend cannot do without, left empty. */
export function missingRequired(fields: Fields, values: Readonly<Record<string, unknown>>): FieldProblem[] {
  return Object.entries(fields)
    .filter(([key, field]) => field.kind === 'string' && field.empty === 'required' && values[key] === '')
    .map(([key]) => ({ key, value: '', reason: 'is required' }));
}

/** Every per-key problem of `values` (a missing key counts as its default). */
export function fieldProblems(fields: Fields, values: Readonly<Record<string, unknown>>): FieldProblem[] {
  const problems: FieldProblem[] = [];
  for (const [key, field] of Object.entries(fields)) {
    const value = values[key] ?? field.default;
    const reason = fieldProblem(field, value);
    if (reason !== undefined) problems.push({ key, value, reason });
  }
  return problems;
}

/**
 * `values` with the defaults filled in, after checking each key; throws a TypeError naming the source
 * and the key (`source "door": ffmpeg.fps must be …, got 500`) for the first problem. For the
 * backends' constructors, which take options from code as well as from the configuration.
 */
export function requireFields<F extends Fields>(
  sourceId: string,
  group: string,
  fields: F,
  values: { readonly [K in keyof F]?: unknown },
  check?: (values: ValuesOf<F>) => FieldProblem[],
): ValuesOf<F> {
  const raw = values as Readonly<Record<string, unknown>>;
  const problems = fieldProblems(fields, raw);
  const filled = Object.fromEntries(Object.entries(fields).map(([key, field]) => [key, raw[key] ?? field.default])) as ValuesOf<F>;
  if (problems.length === 0) problems.push(...missingRequired(fields, filled), ...(check?.(filled) ?? []));
  const first = problems[0];
  if (first) {
    const name = group ? `${group}.${first.key}` : first.key;
    throw new TypeError(`source "${sourceId}": ${name} ${first.reason}, got ${JSON.stringify(first.value)}`);
  }
  return filled;
}

/** Longest delay Node's timers keep (2^31 - 1 ms, about 24.8 days): a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * The keys every backend shares (`capture.intervalMs` …, also per `sources[i]`). The retry range is the
 * ffmpeg backend's restart range, because the retry delays are also its restart backoff.
 */
export const COMMON_CAPTURE_FIELDS = {
  intervalMs: {
    kind: 'integer',
    doc: 'Minimum ms between frames (0 = as fast as inference allows)',
    default: 1000,
    min: 0,
    max: MAX_TIMER_MS,
  },
  retryInitialMs: {
    kind: 'integer',
    doc: 'First delay before retrying a failed capture; doubles up to retryMaxMs',
    default: 1000,
    min: 0,
    max: 3_600_000,
  },
  retryMaxMs: { kind: 'integer', doc: 'Longest delay between capture retries', default: 30_000, min: 0, max: 3_600_000 },
} as const satisfies Fields;

export type CommonCaptureValues = ValuesOf<typeof COMMON_CAPTURE_FIELDS>;
