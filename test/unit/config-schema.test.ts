/**
 * config/inceptiond.schema.json, the JSON Schema generated from the convict schema: committed up to date,
 * a valid draft 2020-12 schema, and in agreement with the loader on the shipped files and on each key's
 * type, enumeration and range.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import {
  buildSchema,
  CONFIG_SCHEMA_PATH,
  ConfigError,
  configJsonSchema,
  configJsonSchemaText,
  loadConfig,
  projectRoot,
  schemaKeys,
} from '../../src/config/index.js';

type Json = Record<string, unknown>;

const committed = readFileSync(path.join(projectRoot, CONFIG_SCHEMA_PATH), 'utf8');
const schema = configJsonSchema();
const ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true });
const validate = ajv.compile(schema);

/** The schema of a dotted key (`mqtt.embeddedBroker.port`). */
function property(key: string, root: Json = schema): Json {
  let node = root;
  for (const part of key.split('.')) node = (node.properties as Record<string, Json>)[part]!;
  return node;
}

function nested(key: string, value: unknown): Json {
  return key
    .split('.')
    .reverse()
    .reduce<unknown>((inner, part) => ({ [part]: inner }), value) as Json;
}

/** Keys whose value must not exceed another's: the loader checks the pair, the JSON Schema each alone. */
const ORDERED: Readonly<Record<string, string>> = {
  'capture.retryInitialMs': 'capture.retryMaxMs',
  'mqtt.reconnectMinSec': 'mqtt.reconnectMaxSec',
};

function mergeDeep(a: Json, b: Json): Json {
  const out: Json = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      typeof prev === 'object' && prev !== null && !Array.isArray(prev) && typeof v === 'object' && v !== null && !Array.isArray(v)
        ? mergeDeep(prev as Json, v as Json)
        : v;
  }
  return out;
}

/** Whether the loader accepts `input` as a file's content (no environment, files named in it not checked). */
function loaderAccepts(input: Json): boolean {
  try {
    loadConfig({ env: {}, overlay: input, checkFiles: false });
    return true;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return false;
  }
}

describe('config/inceptiond.schema.json', () => {
  it('is current (run `npm run schema` after changing the configuration schema)', () => {
    expect(committed).toBe(configJsonSchemaText());
  });

  it('is a draft 2020-12 schema that Ajv compiles in strict mode', () => {
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(typeof validate).toBe('function');
  });

  it('describes every key, with its environment variable, and refuses unknown keys at every level', () => {
    for (const { key, env, legacyEnv, doc } of schemaKeys(buildSchema({}))) {
      const p = property(key);
      expect(p, key).toBeDefined();
      expect(p.description, key).toContain(String(doc));
      expect(p.description, key).toContain(`Environment: ${env}`);
      if (legacyEnv) expect(p.description, key).toContain(`deprecated: ${legacyEnv}`);
    }
    expect(validate({ mqtt: { qos: 1, nope: 1 } })).toBe(false);
    expect(validate({ nope: 1 })).toBe(false);
    expect(validate({ sources: [{ id: 'door', ffmpeg: { nope: 1 } }] })).toBe(false);
  });

  it('says types, enumerations, ranges and defaults as the formats do', () => {
    expect(property('mqtt.qos')).toMatchObject({ enum: [0, 1, 2], default: 1 });
    expect(property('log.format')).toMatchObject({ enum: ['auto', 'json', 'pretty'], default: 'auto' });
    expect(property('log.level')).toMatchObject({ enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'], default: 'info' });
    expect(property('inference.topK')).toMatchObject({ type: 'integer', minimum: 1, maximum: 1000, default: 5 });
    expect(property('inference.threshold')).toMatchObject({ type: 'number', minimum: 0, maximum: 1, default: 0 });
    expect(property('capture.webcam.jpegQuality')).toMatchObject({ type: 'integer', minimum: 1, maximum: 95, default: 90 });
    expect(property('capture.ffmpeg.width')).toMatchObject({ anyOf: [{ const: 0 }, { type: 'integer', minimum: 16, maximum: 8192 }] });
    expect(property('http.enabled')).toMatchObject({ type: 'boolean', default: true });
    expect(property('inference.executionProviders')).toMatchObject({ type: 'array', minItems: 1, uniqueItems: true, default: ['cpu'] });
    expect(property('outbox.maxMessages')).toMatchObject({ type: 'integer', minimum: 1, default: 100_000 });
    // Machine-dependent defaults are described, not copied from the machine that generated the file.
    expect(property('deviceId').default).toBeUndefined();
    expect(property('deviceId').description).toContain('Default: the hostname');
    expect(property('runtimeDir').default).toBeUndefined();
    // A sources entry needs an id; its other keys default to the top-level ones, so they have no default here.
    const entry = property('sources').items as Json;
    expect(entry.required).toEqual(['id']);
    expect(property('ffmpeg.fps', entry)).toMatchObject({ anyOf: [{ const: 0 }, { type: 'number', minimum: 0.01, maximum: 240 }] });
    expect(property('ffmpeg.fps', entry).default).toBeUndefined();
  });

  it('accepts the shipped configuration files, YAML included', () => {
    for (const name of ['default.json', 'development.json', 'example.json']) {
      const file = JSON.parse(readFileSync(path.join(projectRoot, 'config', name), 'utf8')) as Json;
      expect(validate(file), `${name}: ${ajv.errorsText(validate.errors)}`).toBe(true);
    }
    const yaml = parseYaml(readFileSync(path.join(projectRoot, 'config', 'example.yaml'), 'utf8')) as Json;
    expect(validate(yaml), ajv.errorsText(validate.errors)).toBe(true);
    expect(readFileSync(path.join(projectRoot, 'config', 'example.yaml'), 'utf8')).toMatch(
      /^# yaml-language-server: \$schema=\.\/inceptiond\.schema\.json\n/,
    );
    expect(JSON.parse(readFileSync(path.join(projectRoot, 'config', 'example.json'), 'utf8')).$schema).toBe('./inceptiond.schema.json');
  });

  it('agrees with the loader on each key: its default, a value past each end of its range, a word outside its enumeration, a wrong type', () => {
    let compared = 0;
    const mismatches: string[] = [];
    for (const { key } of schemaKeys(buildSchema({}))) {
      if (key === 'sources') continue;
      const p = property(key);
      const range = (p.anyOf as Json[] | undefined)?.find((a) => 'minimum' in a) ?? p;
      const cases: unknown[] = [];
      if ('default' in p) cases.push(p.default);
      if (typeof range.minimum === 'number')
        cases.push(range.minimum, range.type === 'integer' ? range.minimum - 1 : range.minimum - 0.001);
      if (typeof range.maximum === 'number')
        cases.push(range.maximum, range.type === 'integer' ? range.maximum + 1 : range.maximum + 0.001);
      if (range.type === 'integer' && typeof range.minimum === 'number') cases.push(range.minimum + 0.5);
      if (Array.isArray(p.enum)) cases.push('not-one-of-them');
      cases.push({ an: 'object' }, [42]);
      for (const value of cases) {
        // A lower bound that must not exceed its upper one (a check across two keys, which a JSON Schema
        // does not make): the upper one is set to its largest value.
        const partner = ORDERED[key];
        const input = partner ? mergeDeep(nested(key, value), nested(partner, property(partner).maximum)) : nested(key, value);
        // Values that need a partner key (ffmpeg width and height, cert and key) or a backend are judged
        // by the loader beyond one key: compare only the per-key verdict, which a refusal names.
        const schemaSays = validate(input);
        let loaderSays = loaderAccepts(input);
        if (!loaderSays) {
          try {
            loadConfig({ env: {}, overlay: input, checkFiles: false });
          } catch (err) {
            loaderSays = !(err as ConfigError).problems.some((pr) => pr.key === key);
          }
        }
        if (schemaSays !== loaderSays) mismatches.push(`${key} = ${JSON.stringify(value)}: schema ${schemaSays}, loader ${loaderSays}`);
        compared++;
      }
    }
    expect(mismatches).toEqual([]);
    expect(compared).toBeGreaterThan(300);
  });

  it('refuses what the loader refuses in a sources entry, and takes a good one', () => {
    expect(validate({ sources: [{ id: 'door', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://door.lan/1', fps: 500 } }] })).toBe(false);
    expect(validate({ sources: [{ backend: 'files' }] })).toBe(false);
    expect(validate({ sources: [{ id: 'bad id' }] })).toBe(false);
    expect(
      validate({ sources: [{ id: 'door', backend: 'ffmpeg', ffmpeg: { input: 'rtsp://door.lan/1' }, motion: { enabled: true } }] }),
    ).toBe(true);
    expect(validate({ mqtt: { url: 'http://broker' } })).toBe(false);
    expect(validate({ mqtt: { baseTopic: 'a/+/b' } })).toBe(false);
    expect(validate({ mqtt: { baseTopic: 'site/cams' } })).toBe(true);
    expect(validate({ inference: { providerOptions: { qnn: { backend_path: 'libQnnHtp.so', n: 2 } } } })).toBe(true);
    expect(validate({ inference: { providerOptions: { npu: {} } } })).toBe(false);
  });
});
