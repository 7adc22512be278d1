// Loading: schema defaults ← the config file ← INCEPTIOND_* environment variables, then derived values.
//
// config/default.json is NOT read here. The schema (schema.ts) holds the production defaults and is the
// single source of truth; a second, implicit layer would make "where does this value come from?" hard to
// answer on a device months later. config/default.json is `{}` on purpose: a valid file meaning "all
// defaults", for `-c` and for packagers to copy.
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, fileProblem, invalidValue, type ConfigProblem } from './errors.js';
import { buildSchema, schemaKeys } from './schema.js';
import { collectSources } from './sources.js';
import type { Config } from './types.js';
import { checkAgainstSchema } from './validate.js';
import { webcamTmpDirProblem } from '../capture/index.js';

export interface LoadConfigOptions {
  /** Config file; falls back to $INCEPTIOND_CONFIG; none = defaults and env only. */
  file?: string;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /**
   * Check that the files the config names (password, CA, certificate, key) are readable, so a daemon
   * that would fail at connect time fails at start with exit 78 instead. Default true.
   */
  checkFiles?: boolean;
  /**
   * Values over the file's (the `set` request's and the settings it kept in the state directory): the
   * same nested keys as the file; the environment still wins.
   */
  overlay?: Record<string, unknown>;
}

export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file that was read, if any. */
  file?: string;
}

/** Name of the systemd credential (`LoadCredential=mqtt-password:…`) read when mqtt.passwordFile is empty. */
export const MQTT_PASSWORD_CREDENTIAL = 'mqtt-password';

/** Loads, validates and derives the configuration. Throws ConfigError listing every problem found. */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const fileName = options.file || env.INCEPTIOND_CONFIG || undefined;
  const file = fileName === undefined ? undefined : path.resolve(fileName);
  const fromFile = file === undefined ? {} : readConfigFile(file);
  const input = options.overlay ? mergeConfigInput(fromFile, options.overlay) : fromFile;

  const schema = buildSchema(env);
  const { values, problems } = checkAgainstSchema(schema, input, env);
  const raw = values as unknown as Config & { sources: unknown[] };

  // Entries inherit from `capture`: with a bad `capture` every entry would repeat its problem.
  const inherited = ['capture', 'publish', 'motion', 'snapshot'];
  const captureOk = !problems.some((p) => inherited.some((k) => p.key === k || p.key?.startsWith(`${k}.`)));
  let sources: Config['sources'] = [];
  if (captureOk && Array.isArray(raw.sources)) {
    const collected = collectSources(raw, raw.sources);
    problems.push(...collected.problems);
    sources = collected.resolved;
  }
  problems.push(...crossChecks(raw, options.checkFiles ?? true));
  const tmpProblem = sources.some((s) => s.backend === 'webcam') ? webcamTmpDirProblem(raw.runtimeDir) : undefined;
  if (tmpProblem) problems.push(invalidValue('runtimeDir', raw.runtimeDir, tmpProblem));
  if (problems.length > 0) throw new ConfigError(problems);

  const config = derive(raw, env);
  config.sources = sources;
  // After derive: the password may come from systemd's credential directory.
  const plain = plainTextCredentials(config.mqtt);
  if (plain) throw new ConfigError(invalidValue('mqtt.url', config.mqtt.url, plain));
  return file === undefined ? { config } : { config, file };
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

/** The dotted keys an `INCEPTIOND_*` variable sets in `env` (they win over the file and any overlay). */
export function keysSetByEnv(env: NodeJS.ProcessEnv = process.env): Array<{ key: string; env: string }> {
  return schemaKeys(buildSchema(env))
    .filter((k) => k.env !== undefined && env[k.env] !== undefined)
    .map((k) => ({ key: k.key, env: k.env! }));
}

/** Reads and parses a config file; must hold a JSON object (an empty file means `{}`). */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError(fileProblem(`cannot read config file ${file}: ${code}`, String(code)), { cause: err });
  }
  if (text.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // V8 quotes the offending text, newlines included; keep the error on one line.
    const message = (err as Error).message.replace(/\s*\n\s*/g, ' ');
    const reason = `${message}${lineAndColumn(text, (err as Error).message)}`;
    throw new ConfigError(fileProblem(`config file ${file} is not valid JSON: ${reason}`, reason), { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(fileProblem(`config file ${file} must hold a JSON object ({ … })`, 'not an object'));
  }
  return parsed as Record<string, unknown>;
}

/** " (line 3, column 7)" from V8's "… at position N", which alone is hard to find in a file. */
function lineAndColumn(text: string, message: string): string {
  const match = /position (\d+)/.exec(message);
  if (!match) return '';
  const before = text.slice(0, Number(match[1]));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return ` (line ${line}, column ${column})`;
}

/** Fills in the values whose default depends on other keys or on the machine. */
function derive(raw: Config, env: NodeJS.ProcessEnv): Config {
  const config = structuredClone(raw);
  config.stateDir = path.resolve(config.stateDir);
  config.runtimeDir = path.resolve(config.runtimeDir);
  config.model.cacheDir = path.resolve(config.model.cacheDir || path.join(config.stateDir, 'models'));
  if (config.inference.threads === 0) {
    // Two threads get most of the speed-up on the boards we target and leave a core for capture and MQTT.
    config.inference.threads = Math.max(1, Math.min(os.availableParallelism(), 2));
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

function crossChecks(config: Config, checkFiles: boolean): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const { mqtt } = config;
  if ((mqtt.cert === '') !== (mqtt.key === '')) {
    const missing = mqtt.cert === '' ? 'mqtt.cert' : 'mqtt.key';
    problems.push(invalidValue(missing, '', 'mqtt.cert and mqtt.key must be set together'));
  }
  if (
    mqtt.embeddedBroker.enabled &&
    config.http.enabled &&
    mqtt.embeddedBroker.port !== 0 &&
    mqtt.embeddedBroker.port === config.http.port &&
    mqtt.embeddedBroker.host === config.http.host
  ) {
    problems.push(invalidValue('mqtt.embeddedBroker.port', mqtt.embeddedBroker.port, 'is also http.port'));
  }
  if (mqtt.reconnectMinSec > mqtt.reconnectMaxSec) {
    problems.push(
      invalidValue('mqtt.reconnectMinSec', mqtt.reconnectMinSec, `must not exceed mqtt.reconnectMaxSec (${mqtt.reconnectMaxSec})`),
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
          invalidValue(`mqtt.${key}`, file, `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`),
        );
      }
    }
  }
  return problems;
}
