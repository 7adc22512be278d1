// Custom convict formats. Every format that can come from an environment variable has a strict `coerce`:
// convict's own coercion reads "0" as true for booleans and "12abc" as 12 for integers. A coerce that
// cannot parse returns the string unchanged, so `validate` rejects it with a message naming the key.
import convict from 'convict';
import { CONTROL_OPERATIONS, EXECUTION_PROVIDERS } from './types.js';

const PREFIX = 'inceptiond-';

/** A JSON Schema fragment (draft 2020-12) saying what a format accepts in a file, for config/inceptiond.schema.json. */
export type JsonSchema = { [keyword: string]: unknown };

/** Each registered format's JSON Schema (`{}` when it has none: anything the check accepts). */
const registered = new Map<string, JsonSchema>();

/**
 * Registers a convict format once (formats are global to convict) and returns its name. `json` describes
 * the same rule as a JSON Schema fragment, so the published schema says what `validate` accepts.
 */
export function register(
  name: string,
  validate: (value: unknown) => void,
  coerce?: (value: string) => unknown,
  json: JsonSchema = {},
): string {
  const full = PREFIX + name;
  if (!registered.has(full)) {
    convict.addFormat({ name: full, validate, coerce });
    registered.set(full, json);
  }
  return full;
}

/** The JSON Schema of a format registered here (a copy), or undefined for one that is not ours. */
export function formatJsonSchema(format: unknown): JsonSchema | undefined {
  const json = typeof format === 'string' ? registered.get(format) : undefined;
  return json === undefined ? undefined : structuredClone(json);
}

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);

export const BOOLEAN = register(
  'boolean',
  (value) => {
    if (typeof value !== 'boolean') throw new Error('must be a boolean: true/false, 1/0, yes/no or on/off');
  },
  (text) => {
    const word = text.trim().toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
    return text;
  },
  { type: 'boolean' },
);

const INTEGER_TEXT = /^\s*-?\d+\s*$/;
const NUMBER_TEXT = /^\s*-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i;

/** Env text → number when it is one, else the text (so validation names it). */
export const coerceInteger = (text: string): unknown => (INTEGER_TEXT.test(text) ? Number(text) : text);
export const coerceNumber = (text: string): unknown => (NUMBER_TEXT.test(text) ? Number(text) : text);

/** Integer in [min, max]; `max` defaults to the largest safe integer. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): string {
  const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
  return register(
    `integer-${min}-${max}`,
    (value) => {
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
        throw new Error(`must be a whole number ${range}`);
      }
    },
    coerceInteger,
    max === Number.MAX_SAFE_INTEGER ? { type: 'integer', minimum: min } : { type: 'integer', minimum: min, maximum: max },
  );
}

export const NATURAL = integer(0);
export const PORT = integer(0, 65535);

export function numberInRange(min: number, max: number): string {
  return register(
    `number-${min}-${max}`,
    (value) => {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
        throw new Error(`must be a number from ${min} to ${max}`);
      }
    },
    coerceNumber,
    { type: 'number', minimum: min, maximum: max },
  );
}

/** Enumerations; numbers are parsed from env text ("1" for qos). */
export function oneOf<T extends string | number>(values: readonly T[]): string {
  const numeric = values.every((v) => typeof v === 'number');
  return register(
    `one-of-${values.join('|')}`,
    (value) => {
      if (!values.includes(value as T)) throw new Error(`must be one of ${JSON.stringify(values)}`);
    },
    (text) => {
      const trimmed = text.trim();
      return numeric && INTEGER_TEXT.test(trimmed) ? Number(trimmed) : trimmed;
    },
    { enum: [...values] },
  );
}

/** Env text for lists: a JSON array, or comma-separated words. */
function parseList(text: string): unknown {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    try {
      return JSON.parse(trimmed) as unknown;
    } catch {
      return text;
    }
  }
  return trimmed === '' ? [] : trimmed.split(',').map((s) => s.trim());
}

export const STRING_LIST = register(
  'string-list',
  (value) => {
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
      throw new Error('must be an array of strings (env: a JSON array)');
    }
  },
  // ffmpeg arguments may contain commas (filter graphs), so env text must be a JSON array here.
  (text) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  },
  { type: 'array', items: { type: 'string' } },
);

export const EXECUTION_PROVIDER_LIST = register(
  'execution-providers',
  (value) => {
    if (!Array.isArray(value) || value.length === 0) {
      throw new Error(`must be a non-empty list of execution providers from ${EXECUTION_PROVIDERS.join(', ')}`);
    }
    const unknown = value.filter((v) => !(EXECUTION_PROVIDERS as readonly unknown[]).includes(v));
    if (unknown.length > 0) {
      throw new Error(
        `unknown execution provider ${unknown.map((u) => JSON.stringify(u)).join(', ')}; known: ${EXECUTION_PROVIDERS.join(', ')}`,
      );
    }
    if (new Set(value).size !== value.length) throw new Error('lists an execution provider twice');
  },
  parseList,
  { type: 'array', items: { enum: [...EXECUTION_PROVIDERS] }, minItems: 1, uniqueItems: true },
);

export const CONTROL_OPERATION_LIST = register(
  'control-operations',
  (value) => {
    if (!Array.isArray(value)) throw new Error(`must be a list of operations from ${CONTROL_OPERATIONS.join(', ')}`);
    const unknown = value.filter((v) => !(CONTROL_OPERATIONS as readonly unknown[]).includes(v));
    if (unknown.length > 0) {
      throw new Error(`unknown operation ${unknown.map((u) => JSON.stringify(u)).join(', ')}; known: ${CONTROL_OPERATIONS.join(', ')}`);
    }
  },
  parseList,
  { type: 'array', items: { enum: [...CONTROL_OPERATIONS] } },
);

/**
 * `{"<provider>": {"<option>": string | number | string[]}}`: handed to ONNX Runtime as the provider's
 * options. ORT takes option values as strings (numbers are passed as their decimal text; a list is for
 * options such as WebGPU's forceCpuNodeNames); provider names are checked here, option names by ORT
 * when the session is created.
 */
export const PROVIDER_OPTIONS = register(
  'provider-options',
  (value) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new Error('must be an object of provider → options, e.g. {"qnn": {"backend_path": "libQnnHtp.so"}} (env: JSON)');
    }
    for (const [provider, options] of Object.entries(value)) {
      if (!(EXECUTION_PROVIDERS as readonly string[]).includes(provider)) {
        throw new Error(`names unknown execution provider "${provider}"; known: ${EXECUTION_PROVIDERS.join(', ')}`);
      }
      if (typeof options !== 'object' || options === null || Array.isArray(options)) {
        throw new Error(`.${provider} must be an object of option names to values`);
      }
      for (const [name, v] of Object.entries(options as Record<string, unknown>)) {
        if (name === '' || name === 'name') throw new Error(`.${provider} has an invalid option name ${JSON.stringify(name)}`);
        const ok =
          typeof v === 'string' ||
          (typeof v === 'number' && Number.isFinite(v)) ||
          (Array.isArray(v) && v.every((x) => typeof x === 'string'));
        if (!ok) throw new Error(`.${provider}.${name} must be a string, a number or a list of strings, got ${JSON.stringify(v)}`);
      }
    }
  },
  (text) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  },
  {
    type: 'object',
    propertyNames: { enum: [...EXECUTION_PROVIDERS] },
    additionalProperties: {
      type: 'object',
      propertyNames: { minLength: 1, not: { const: 'name' } },
      additionalProperties: { anyOf: [{ type: 'string' }, { type: 'number' }, { type: 'array', items: { type: 'string' } }] },
    },
  },
);

const MQTT_SCHEMES = ['mqtt', 'mqtts', 'ws', 'wss', 'tcp', 'ssl'];

// Not convict's 'url' format: convict 6 moved it out (it throws "unknown format type"), and it would
// accept http:// anyway.
export const MQTT_URL = register(
  'mqtt-url',
  (value) => {
    if (typeof value !== 'string') throw new Error('must be a string');
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new Error(`must be a URL like mqtt://host:1883 (schemes: ${MQTT_SCHEMES.join(', ')})`);
    }
    const scheme = url.protocol.replace(/:$/, '');
    if (!MQTT_SCHEMES.includes(scheme)) {
      throw new Error(`scheme "${scheme}" is not supported; use one of ${MQTT_SCHEMES.join(', ')}`);
    }
    if (url.hostname === '') throw new Error('has no host');
  },
  undefined,
  { type: 'string', pattern: `^(${MQTT_SCHEMES.join('|')})://[^/?#]` },
);

/** A topic prefix we publish under: '' (derived), or levels without wildcards. */
export const TOPIC_PREFIX = register(
  'topic-prefix',
  (value) => {
    if (typeof value !== 'string') throw new Error('must be a string');
    if (value === '') return;
    if (/[+#]/.test(value)) throw new Error('must not contain MQTT wildcards (+ or #)');
    if (value.includes('\u0000')) throw new Error('must not contain NUL');
    if (value.startsWith('/') || value.endsWith('/') || value.includes('//')) {
      throw new Error('must not start or end with "/" or contain empty levels');
    }
  },
  undefined,
  // '' or levels of characters other than / + # and NUL, separated by single slashes.
  { type: 'string', pattern: '^([^/+#\\u0000]+(/[^/+#\\u0000]+)*)?$' },
);

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const NAME_RULE = '1-64 characters from A-Z, a-z, 0-9, "_" and "-"';

/** Names that become one MQTT topic level and a Home Assistant object id. */
export const TOPIC_SAFE_NAME = register(
  'topic-safe-name',
  (value) => {
    if (typeof value !== 'string' || !NAME.test(value)) throw new Error(`must be ${NAME_RULE}`);
  },
  undefined,
  { type: 'string', pattern: NAME.source },
);

export const SOURCE_ID = register(
  'source-id',
  (value) => {
    if (value === null || value === undefined) throw new Error(`is required (${NAME_RULE})`);
    if (typeof value !== 'string' || !NAME.test(value)) throw new Error(`must be ${NAME_RULE}`);
  },
  undefined,
  { type: 'string', pattern: NAME.source },
);

/** `sources` only checks the outer shape; entries are validated one by one (sources.ts) to name the entry. */
export const SOURCE_LIST = register(
  'source-list',
  (value) => {
    if (!Array.isArray(value)) throw new Error('must be an array of source objects (env: a JSON array)');
  },
  (text) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  },
  // The entries' own schema is added by json-schema.ts (it is built from the capture and stage keys).
  { type: 'array' },
);

export const STRING = register(
  'string',
  (value) => {
    if (typeof value !== 'string') throw new Error('must be a string');
  },
  undefined,
  { type: 'string' },
);

export const NON_EMPTY_STRING = register(
  'non-empty-string',
  (value) => {
    if (typeof value !== 'string' || value === '') throw new Error('must be a non-empty string');
  },
  undefined,
  { type: 'string', minLength: 1 },
);
