// Loading: schema defaults ← the config file (JSON or YAML) ← the settings `set` requests kept (when
// asked) ← an overlay ← INCEPTIOND_* environment variables, then derived values. Each value's origin is
// kept, and a problem names the place in the file where its key is written.
//
// config/default.json is NOT read here. The schema (schema.ts) holds the production defaults and is the
// single source of truth; a second, implicit layer would make "where does this value come from?" hard to
// answer on a device months later. config/default.json is `{}` on purpose: a valid file meaning "all
// defaults", for `-c` and for packagers to copy.
import { accessSync, constants, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { reportOnce, resolveEnv, type ResolvedEnv } from './env.js';
import { ConfigError, invalidValue, withLocation, type ConfigProblem } from './errors.js';
import { parseConfigFile, type ConfigFileData } from './file.js';
import { entryKeys, layerOrigin, owningLayer, type ConfigOrigin, type Layer } from './origins.js';
import { buildSchema, isLeaf, schemaKeys, type SchemaNode } from './schema.js';
import { collectSources } from './sources.js';
import type { Config } from './types.js';
import { checkAgainstSchema } from './validate.js';
import { webcamTmpDirProblem } from '../capture/index.js';

export { readConfigFile } from './file.js';

export interface LoadConfigOptions {
  /** Config file (.json, or .yaml/.yml); falls back to $INCEPTIOND_CONFIG; none = defaults and env only. */
  file?: string;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /**
   * Check that the files the config names (password, CA, certificate, key) are readable, so a daemon
   * that would fail at connect time fails at start with exit 78 instead. Default true.
   */
  checkFiles?: boolean;
  /**
   * Also lay `<stateDir>/settings.json` (the values `set` requests kept) over the file, as `run` does, so
   * `config print` and `doctor` show what the daemon runs with. A file that cannot be read (another
   * user's state directory) is left out with a warning. Default false.
   */
  settings?: boolean;
  /**
   * Values over the file's (the `set` request's and the settings it kept in the state directory): the
   * same nested keys as the file; the environment still wins.
   */
  overlay?: Record<string, unknown>;
  /**
   * Called with each warning (a deprecated environment variable, both names of one set, unreadable
   * settings), once per distinct message for the same function however often the configuration is
   * loaded. The warnings are also in the result.
   */
  onWarning?: (message: string) => void;
}

export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file that was read, if any. */
  file?: string;
  /** Absolute path of the settings file laid over it (with `settings: true`, when there is one). */
  settingsFile?: string;
  /**
   * Where each value came from, by dotted key, in schema order: every key of the schema, and the keys
   * each `sources` entry writes (`sources[0].ffmpeg.input`) when `sources` is set.
   */
  origins: Record<string, ConfigOrigin>;
  /** Deprecated environment variable names in use and the like: see `onWarning`. */
  warnings: string[];
}

/** Name of the systemd credential (`LoadCredential=mqtt-password:…`) read when mqtt.passwordFile is empty. */
export const MQTT_PASSWORD_CREDENTIAL = 'mqtt-password';

/** The settings `set` requests keep, in the state directory (daemon/settings.ts writes it). */
export const SETTINGS_FILE_NAME = 'settings.json';

/** A top-level key a file may hold for editors (`"$schema": "./inceptiond.schema.json"`): not a setting. */
export const SCHEMA_KEY = '$schema';

/** Loads, validates and derives the configuration. Throws ConfigError listing every problem found. */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const fileName = options.file || env.INCEPTIOND_CONFIG || undefined;
  const file = fileName === undefined ? undefined : path.resolve(fileName);
  const schema = buildSchema(env);
  const resolved = resolveEnv(schema, env);
  const warnings = [...resolved.warnings];
  const problems: ConfigProblem[] = [];

  const layers: Layer[] = [];
  if (file !== undefined) layers.push(fileLayer(parseConfigFile(file), problems));
  let settingsFile: string | undefined;
  if (options.settings) {
    const settings = readSettingsLayer(schema, resolved, layers, options.overlay, warnings);
    if (settings) {
      layers.push(settings);
      settingsFile = settings.file;
    }
  }
  if (options.overlay) layers.push({ kind: 'overlay', values: options.overlay });
  // The file's values, parsed here, are not copied (mergeConfigInput copies the layers above, which the
  // caller may keep): a hostile file nested thousands deep would overflow structuredClone, where
  // validation refuses it with a message.
  const [first, ...above] = layers;
  const base = first === undefined ? {} : first.kind === 'file' ? first.values : mergeConfigInput({}, first.values);
  const input = above.reduce((merged, layer) => mergeConfigInput(merged, layer.values), base);

  const envOrigin = (key: string) => resolved.set.get(key)?.variable;
  const checked = checkAgainstSchema(schema, input, resolved.env, '', envOrigin);
  problems.push(...checked.problems);
  const raw = checked.values as unknown as Config & { sources: unknown[] };

  // Entries inherit from `capture`: with a bad `capture` every entry would repeat its problem.
  const inherited = ['capture', 'publish', 'motion', 'snapshot'];
  const captureOk = !problems.some((p) => inherited.some((k) => p.key === k || p.key?.startsWith(`${k}.`)));
  let sources: Config['sources'] = [];
  if (captureOk && Array.isArray(raw.sources)) {
    const collected = collectSources(raw, raw.sources);
    problems.push(...collected.problems);
    sources = collected.resolved;
  }
  problems.push(...crossChecks(raw, options.checkFiles ?? true, envOrigin));
  // A runtimeDir that is not a string is already reported (and path.resolve would throw on it).
  const webcam = typeof raw.runtimeDir === 'string' && sources.some((s) => s.backend === 'webcam');
  const tmpProblem = webcam ? webcamTmpDirProblem(raw.runtimeDir) : undefined;
  if (tmpProblem) problems.push(invalidValue('runtimeDir', raw.runtimeDir, tmpProblem, envOrigin('runtimeDir')));
  if (options.onWarning) reportOnce(options.onWarning, warnings);
  if (problems.length > 0) throw new ConfigError(problems.map((p) => locate(p, layers, resolved)));

  const config = derive(raw, env);
  config.sources = sources;
  // After derive: the password may come from systemd's credential directory.
  const plain = plainTextCredentials(config.mqtt);
  if (plain) throw new ConfigError(locate(invalidValue('mqtt.url', config.mqtt.url, plain, envOrigin('mqtt.url')), layers, resolved));
  const origins = originsOf(schema, layers, resolved, raw, config, env);
  return { config, ...(file === undefined ? {} : { file }), ...(settingsFile ? { settingsFile } : {}), origins, warnings };
}

/** The file's values without its `$schema` (which must be a string), as a layer. */
function fileLayer(data: ConfigFileData, problems: ConfigProblem[]): Layer {
  const values = { ...data.values };
  if (Object.hasOwn(values, SCHEMA_KEY)) {
    if (typeof values[SCHEMA_KEY] !== 'string') {
      const at = data.positions.get(SCHEMA_KEY);
      const problem = invalidValue(SCHEMA_KEY, values[SCHEMA_KEY], 'must be a string: the URL or path of the JSON Schema, for editors');
      problems.push(at ? withLocation(problem, { file: data.file, ...at }) : problem);
    }
    delete values[SCHEMA_KEY];
  }
  return { kind: 'file', values, file: data.file, positions: data.positions };
}

/**
 * `<stateDir>/settings.json` as a layer, or undefined when there is none. stateDir is the one this load
 * will have (environment, overlay, file, default, in that order).
 */
function readSettingsLayer(
  schema: SchemaNode,
  resolved: ResolvedEnv,
  layers: readonly Layer[],
  overlay: Record<string, unknown> | undefined,
  warnings: string[],
): Layer | undefined {
  const leaf = schema.stateDir;
  if (leaf === undefined || !isLeaf(leaf)) return undefined;
  const candidates = [
    leaf.env === undefined ? undefined : resolved.env[leaf.env],
    overlay?.stateDir,
    ...layers.map((l) => l.values.stateDir).reverse(),
    leaf.default,
  ];
  const stateDir = candidates.find((c) => c !== undefined);
  // A bad stateDir is reported by validation.
  if (typeof stateDir !== 'string' || stateDir === '') return undefined;
  const file = path.resolve(stateDir, SETTINGS_FILE_NAME);
  let data: ConfigFileData;
  try {
    data = parseConfigFile(file);
  } catch (err) {
    const problem = err instanceof ConfigError ? err.problems[0] : undefined;
    if (problem?.reason === 'ENOENT') return undefined;
    if (problem?.reason === 'EACCES' || problem?.reason === 'EPERM') {
      warnings.push(`${problem.message}: the values set requests kept there are left out`);
      return undefined;
    }
    if (err instanceof ConfigError) {
      throw new ConfigError(
        err.problems.map((p) => ({ ...p, message: `${p.message} (the settings kept by set requests: fix or delete the file)` })),
        { cause: err },
      );
    }
    throw err;
  }
  return { kind: 'settings', values: data.values, file, positions: data.positions };
}

/** The problem with the place of its key in the file (or settings file) that wrote it, when one did. */
function locate(problem: ConfigProblem, layers: readonly Layer[], resolved: ResolvedEnv): ConfigProblem {
  const key = problem.key;
  if (key === undefined || problem.origin !== undefined || problem.file !== undefined) return problem;
  const top = key.split(/[.[]/)[0]!;
  // A value the environment gives, or a list it gives (INCEPTIOND_SOURCES replaces the file's).
  if (resolved.set.has(key) || resolved.set.has(top)) return problem;
  const layer = owningLayer(layers, key);
  if (layer?.file !== undefined) {
    const at = layer.positions?.get(key);
    if (at) return withLocation(problem, { file: layer.file, ...at });
  }
  // A key an entry leaves out (a required one): the place of the entry.
  const entry = /^[^.[]+\[\d+\]/.exec(key)?.[0];
  if (entry !== undefined && entry !== key) {
    const owner = owningLayer(layers, entry);
    const at = owner?.positions?.get(entry);
    if (owner?.file !== undefined && at) return withLocation(problem, { file: owner.file, ...at, entry });
  }
  return problem;
}

/** Where each key's value came from (see LoadedConfig.origins). */
function originsOf(
  schema: SchemaNode,
  layers: readonly Layer[],
  resolved: ResolvedEnv,
  raw: Config,
  config: Config,
  env: NodeJS.ProcessEnv,
): Record<string, ConfigOrigin> {
  const origins: Record<string, ConfigOrigin> = {};
  for (const { key } of schemaKeys(schema)) {
    const fromEnv = resolved.set.get(key);
    const layer = fromEnv ? undefined : owningLayer(layers, key);
    let origin: ConfigOrigin;
    if (fromEnv) origin = { kind: 'env', ...fromEnv };
    else if (layer) origin = layerOrigin(layer, key);
    else {
      const derived = derivedFrom(key, raw, config, env);
      origin = derived ? { kind: 'default', derived } : { kind: 'default' };
    }
    origins[key] = origin;
    if (key !== 'sources' || origin.kind === 'default') continue;
    // Each entry's keys as written; the ones it leaves out come from capture, publish, motion and snapshot.
    const list = layer ? layer.values.sources : raw.sources;
    for (const entryKey of entryKeys(list, 'sources')) origins[entryKey] = layer ? layerOrigin(layer, entryKey) : origin;
  }
  return origins;
}

/** What a default value was computed from, for the keys whose default depends on the machine or on other keys. */
function derivedFrom(key: string, raw: Config, config: Config, env: NodeJS.ProcessEnv): string | undefined {
  switch (key) {
    case 'deviceId':
      return 'the hostname';
    case 'stateDir':
      return env.STATE_DIRECTORY ? '$STATE_DIRECTORY (systemd)' : undefined;
    case 'runtimeDir':
      return env.RUNTIME_DIRECTORY ? '$RUNTIME_DIRECTORY (systemd)' : 'the OS temp dir';
    case 'model.cacheDir':
      return raw.model.cacheDir === '' ? '<stateDir>/models' : undefined;
    case 'inference.threads':
      return raw.inference.threads === 0 ? 'min(cores, 2 × workers) ÷ workers' : undefined;
    case 'mqtt.baseTopic':
      return raw.mqtt.baseTopic === '' ? 'inceptiond/<deviceId>' : undefined;
    case 'mqtt.clientId':
      return raw.mqtt.clientId === '' ? 'inceptiond-<deviceId>' : undefined;
    case 'mqtt.passwordFile':
      return raw.mqtt.passwordFile === '' && config.mqtt.passwordFile !== ''
        ? `$CREDENTIALS_DIRECTORY/${MQTT_PASSWORD_CREDENTIAL}`
        : undefined;
    case 'sources':
      return 'one source "camera" made of capture, publish, motion and snapshot';
    default:
      return undefined;
  }
}

/**
 * `over` merged into `base`, key by key; arrays and values replace (a `sources` list is replaced whole,
 * as in a file). Neither argument is changed.
 */
export function mergeConfigInput(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = Object.hasOwn(out, key) ? out[key] : undefined;
    // Defined, not assigned: `out["__proto__"] = …` would replace the prototype and hide the key from
    // validation, which must refuse it as unknown.
    Object.defineProperty(out, key, {
      value: isPlainObject(value) && isPlainObject(prev) ? mergeConfigInput(prev, value) : structuredClone(value),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The dotted keys an `INCEPTIOND_*` variable sets in `env` (they win over the file and any overlay), with
 * the variable that sets each: its name, or a deprecated alias.
 */
export function keysSetByEnv(env: NodeJS.ProcessEnv = process.env): Array<{ key: string; env: string }> {
  return [...resolveEnv(buildSchema(env), env).set].map(([key, setting]) => ({ key, env: setting.variable }));
}

/** Fills in the values whose default depends on other keys or on the machine. */
function derive(raw: Config, env: NodeJS.ProcessEnv): Config {
  const config = structuredClone(raw);
  config.stateDir = path.resolve(config.stateDir);
  config.runtimeDir = path.resolve(config.runtimeDir);
  config.model.cacheDir = path.resolve(config.model.cacheDir || path.join(config.stateDir, 'models'));
  if (config.inference.threads === 0) {
    // Two threads get most of the speed-up on the boards we target and leave a core for capture and MQTT;
    // several workers share those cores instead of each taking two.
    const { workers } = config.inference;
    config.inference.threads = Math.max(1, Math.floor(Math.min(os.availableParallelism(), 2 * workers) / workers));
  }
  config.mqtt.baseTopic ||= `inceptiond/${config.deviceId}`;
  config.mqtt.clientId ||= `inceptiond-${config.deviceId}`;
  if (config.mqtt.passwordFile === '' && env.CREDENTIALS_DIRECTORY) {
    const credential = path.join(env.CREDENTIALS_DIRECTORY, MQTT_PASSWORD_CREDENTIAL);
    if (existsSync(credential)) config.mqtt.passwordFile = credential;
  }
  return config;
}

/**
 * Why credentials would cross the network in plain text (a user name or password over mqtt:// or ws:// to a
 * broker that is not this machine, without mqtt.allowInsecure), or undefined. The URL's own user:pass@
 * counts as credentials too.
 */
export function plainTextCredentials(mqtt: Config['mqtt']): string | undefined {
  let url: URL;
  try {
    url = new URL(mqtt.url);
  } catch {
    return undefined; // the URL's format check reports it
  }
  const hasCredentials = mqtt.username !== '' || mqtt.passwordFile !== '' || url.username !== '' || url.password !== '';
  if (!hasCredentials || mqtt.allowInsecure) return undefined;
  if (!['mqtt:', 'tcp:', 'ws:'].includes(url.protocol)) return undefined;
  if (isLoopback(url.hostname)) return undefined;
  return `would send the MQTT user name and password unencrypted to ${url.hostname}: use mqtts:// or wss:// (with mqtt.ca), or set mqtt.allowInsecure to true`;
}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

function crossChecks(config: Config, checkFiles: boolean, envOrigin: (key: string) => string | undefined): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const { mqtt } = config;
  if ((mqtt.cert === '') !== (mqtt.key === '')) {
    const missing = mqtt.cert === '' ? 'mqtt.cert' : 'mqtt.key';
    problems.push(invalidValue(missing, '', 'mqtt.cert and mqtt.key must be set together', envOrigin(missing)));
  }
  if (
    mqtt.embeddedBroker.enabled &&
    config.http.enabled &&
    mqtt.embeddedBroker.port !== 0 &&
    mqtt.embeddedBroker.port === config.http.port &&
    mqtt.embeddedBroker.host === config.http.host
  ) {
    const key = 'mqtt.embeddedBroker.port';
    problems.push(invalidValue(key, mqtt.embeddedBroker.port, 'is also http.port', envOrigin(key)));
  }
  if (mqtt.reconnectMinSec > mqtt.reconnectMaxSec) {
    problems.push(
      invalidValue(
        'mqtt.reconnectMinSec',
        mqtt.reconnectMinSec,
        `must not exceed mqtt.reconnectMaxSec (${mqtt.reconnectMaxSec})`,
        envOrigin('mqtt.reconnectMinSec'),
      ),
    );
  }
  if (checkFiles) {
    for (const key of ['passwordFile', 'ca', 'cert', 'key'] as const) {
      const file = mqtt[key];
      if (typeof file !== 'string' || file === '') continue;
      try {
        accessSync(file, constants.R_OK);
      } catch (err) {
        problems.push(
          invalidValue(
            `mqtt.${key}`,
            file,
            `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
            envOrigin(`mqtt.${key}`),
          ),
        );
      }
    }
  }
  return problems;
}
