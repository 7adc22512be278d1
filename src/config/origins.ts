// Where each configuration value came from: the schema's default (perhaps derived from the machine or
// other keys), the config file (which file, which line), the settings `set` requests kept in the state
// directory, an overlay given by the caller, or an environment variable (which one, deprecated or not).
// `config print --origin` and `doctor` show it, so "why is this value what it is?" has an answer on a
// device months later.
import type { Position } from './file.js';
import { redactConfig } from './redact.js';

export type ConfigOrigin =
  /** `derived`: what the value was computed from, when the default is not the schema's literal value. */
  | { kind: 'default'; derived?: string }
  | { kind: 'file'; file: string; line?: number; column?: number }
  | { kind: 'settings'; file: string; line?: number; column?: number }
  | { kind: 'overlay' }
  /** `replacement`: set when `variable` is a deprecated alias of that name. */
  | { kind: 'env'; variable: string; replacement?: string };

/** One line's worth: `default`, `file /etc/inceptiond/config.yaml:12:5`, `env INCEPTIOND_MQTT_URL` … */
export function describeOrigin(origin: ConfigOrigin): string {
  switch (origin.kind) {
    case 'default':
      return origin.derived ? `default: ${origin.derived}` : 'default';
    case 'file':
    case 'settings': {
      const at = origin.line === undefined ? '' : `:${origin.line}:${origin.column}`;
      return `${origin.kind} ${origin.file}${at}`;
    }
    case 'overlay':
      return 'overlay';
    case 'env':
      return origin.replacement ? `env ${origin.variable} (deprecated name of ${origin.replacement})` : `env ${origin.variable}`;
  }
}

/** A file's values with the place of each key (config/file.ts). */
export interface Layer {
  kind: 'file' | 'settings' | 'overlay';
  values: Record<string, unknown>;
  file?: string;
  positions?: Map<string, Position>;
}

type Segment = string | number;

/** `sources[1].ffmpeg.input` → ['sources', 1, 'ffmpeg', 'input']. */
export function keySegments(key: string): Segment[] {
  const out: Segment[] = [];
  for (const part of key.split('.')) {
    const match = /^([^[]*)((?:\[\d+\])*)$/.exec(part);
    if (!match) {
      out.push(part);
      continue;
    }
    if (match[1] !== '') out.push(match[1]!);
    for (const index of match[2]!.matchAll(/\[(\d+)\]/g)) out.push(Number(index[1]));
  }
  return out;
}

/** Whether `values` holds `key` (dotted, with `[i]` for list entries). */
export function hasKey(values: unknown, key: string): boolean {
  let node = values;
  for (const segment of keySegments(key)) {
    if (typeof segment === 'number') {
      if (!Array.isArray(node) || segment >= node.length) return false;
      node = node[segment];
    } else {
      if (typeof node !== 'object' || node === null || Array.isArray(node) || !Object.hasOwn(node, segment)) return false;
      node = (node as Record<string, unknown>)[segment];
    }
  }
  return true;
}

/** The value at `key`, or undefined. */
export function valueAt(values: unknown, key: string): unknown {
  let node = values;
  for (const segment of keySegments(key)) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[segment];
  }
  return node;
}

/**
 * The layer a key's value comes from (the highest that writes it), or undefined. Lists are replaced
 * whole, so a key inside a `sources` entry belongs to the highest layer that writes `sources`.
 */
export function owningLayer(layers: readonly Layer[], key: string): Layer | undefined {
  const top = keySegments(key)[0];
  const inList = typeof top === 'string' && /^[^.[]+\[\d+\]/.test(key) ? top : undefined;
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i]!;
    if (inList !== undefined) {
      if (hasKey(layer.values, inList)) return layer;
    } else if (hasKey(layer.values, key)) return layer;
  }
  return undefined;
}

/** The origin a layer gives a key it writes. */
export function layerOrigin(layer: Layer, key: string): ConfigOrigin {
  if (layer.kind === 'overlay' || layer.file === undefined) return { kind: 'overlay' };
  const at = layer.positions?.get(key);
  return at ? { kind: layer.kind, file: layer.file, line: at.line, column: at.column } : { kind: layer.kind, file: layer.file };
}

/** The leaf keys inside each list entry (`sources[0].id`, `sources[0].ffmpeg.input`), as written. */
export function entryKeys(list: unknown, prefix: string): string[] {
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  const walk = (node: unknown, key: string) => {
    if (typeof node === 'object' && node !== null && !Array.isArray(node) && Object.keys(node).length > 0) {
      for (const [k, v] of Object.entries(node)) walk(v, `${key}.${k}`);
    } else out.push(key);
  };
  list.forEach((entry, i) => {
    walk(entry, `${prefix}[${i}]`);
  });
  return out;
}

/** One value as `config print --origin` and `doctor` show it: secrets redacted, URLs' credentials masked. */
export function redactedValueAt(key: string, value: unknown): unknown {
  const last = keySegments(key)
    .filter((s): s is string => typeof s === 'string')
    .at(-1);
  return last === undefined ? redactConfig(value) : redactConfig({ [last]: value })[last];
}

export interface ValueWithOrigin {
  key: string;
  value: unknown;
  origin: ConfigOrigin;
  /** describeOrigin(origin). */
  from: string;
}

/**
 * Each key of `origins` with its value in `config` (redacted) and where it came from. `sources` is shown
 * as configured: `[]` when nothing sets it (the effective list then holds the one source made of
 * `capture`); when it is set, its entries' keys are listed instead of one long line.
 */
export function valuesWithOrigins(config: object, origins: Readonly<Record<string, ConfigOrigin>>): ValueWithOrigin[] {
  const out: ValueWithOrigin[] = [];
  for (const [key, origin] of Object.entries(origins)) {
    let value: unknown;
    if (key === 'sources') {
      if (origin.kind !== 'default') continue;
      value = [];
    } else value = valueAt(config, key);
    out.push({ key, value: redactedValueAt(key, value), origin, from: describeOrigin(origin) });
  }
  return out;
}

/** `key = value  (origin)` lines. */
export function formatOrigins(values: readonly ValueWithOrigin[]): string {
  return values.map((v) => `${v.key} = ${JSON.stringify(v.value)}  (${v.from})`).join('\n');
}

/** What `doctor` (and `config print --origin json`) say about the configuration as a whole. */
export interface ConfigurationReport {
  /** The config file read, if any. */
  file?: string;
  /** The settings `set` requests kept, when laid over the file. */
  settingsFile?: string;
  /** The values shown: all, or those not at their default. */
  values: ValueWithOrigin[];
  warnings: string[];
}

/** The report of a load (LoadedConfig); `only: 'changed'` keeps the values that are not defaults. */
export function configurationReport(
  loaded: {
    config: object;
    file?: string;
    settingsFile?: string;
    origins: Readonly<Record<string, ConfigOrigin>>;
    warnings: readonly string[];
  },
  only: 'all' | 'changed' = 'all',
): ConfigurationReport {
  const all = valuesWithOrigins(loaded.config, loaded.origins);
  const values = only === 'all' ? all : all.filter((v) => v.origin.kind !== 'default');
  return {
    ...(loaded.file ? { file: loaded.file } : {}),
    ...(loaded.settingsFile ? { settingsFile: loaded.settingsFile } : {}),
    values,
    warnings: [...loaded.warnings],
  };
}

/**
 * `doctor`'s text: a heading naming the files, then one indented `key = value  (origin)` line per value
 * not at its default, then the warnings.
 */
export function formatConfigurationReport(report: ConfigurationReport): string {
  const files = [report.file ? `file ${report.file}` : 'no file (defaults and environment)'];
  if (report.settingsFile) files.push(`settings ${report.settingsFile}`);
  const count = report.values.length;
  const lines = [`configuration: ${files.join(', ')}; ${count === 0 ? 'every value is a default' : `${count} not default:`}`];
  for (const line of formatOrigins(report.values).split('\n').filter(Boolean)) lines.push(`  ${line}`);
  for (const warning of report.warnings) lines.push(`  warning: ${warning}`);
  return lines.join('\n');
}
