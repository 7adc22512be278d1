import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, EXIT, EX_CONFIG, loadConfig, projectRoot, type LoadConfigOptions } from '../../src/config/index.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'inceptiond-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function writeConfig(content: unknown, name = 'config.json'): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

function loadError(options: LoadConfigOptions): ConfigError {
  try {
    loadConfig(options);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('loadConfig accepted an invalid configuration');
}

describe('loadConfig', () => {
  it('refuses a number written as a string in a file (the environment may give text) and a __proto__ key in an overlay', () => {
    const err = loadError({ file: writeConfig({ inference: { topK: '3' }, mqtt: { qos: '1' } }), env: {} });
    expect(err.problems.map((p) => p.key)).toEqual(['inference.topK', 'mqtt.qos']);
    expect(err.message).toContain('inference.topK = "3": must be a number, not a string');
    expect(loadConfig({ env: { INCEPTIOND_INFERENCE_TOP_K: '3' } }).config.inference.topK).toBe(3);
    const proto = loadError({ env: {}, overlay: JSON.parse('{"__proto__": {"inference": {"topK": 2}}}') });
    expect(proto.problems.map((p) => p.message)).toEqual([expect.stringMatching(/unknown key: __proto__/)]);
  });

  it('merges the file over the defaults, and an env var wins over the file', () => {
    const file = writeConfig({
      deviceId: 'porch',
      stateDir: dir,
      mqtt: { url: 'mqtts://broker.lan:8883', qos: 2 },
      capture: { webcam: { device: '/dev/video2' } },
    });
    const { config, file: loaded } = loadConfig({
      file,
      env: { INCEPTIOND_MQTT_QOS: '0', INCEPTIOND_CAPTURE_WEBCAM_WIDTH: '1280' },
    });
    expect(loaded).toBe(file);
    expect(config.mqtt.qos).toBe(0);
    expect(config.mqtt.url).toBe('mqtts://broker.lan:8883');
    expect(config.capture.webcam.device).toBe('/dev/video2');
    expect(config.capture.webcam.width).toBe(1280);
    // untouched keys keep the schema defaults
    expect(config.capture.webcam.height).toBe(480);
    expect(config.log.level).toBe('info');
  });

  it('reads the file named by INCEPTIOND_CONFIG when none is given', () => {
    const file = writeConfig({ deviceId: 'from-env-file' });
    expect(loadConfig({ env: { INCEPTIOND_CONFIG: file } }).config.deviceId).toBe('from-env-file');
  });

  it('derives topic, client id, model cache and threads from other keys', () => {
    const file = writeConfig({ deviceId: 'shed-2', stateDir: path.join(dir, 'state') });
    const { config } = loadConfig({ file, env: {} });
    expect(config.mqtt.baseTopic).toBe('inceptiond/shed-2');
    expect(config.mqtt.clientId).toBe('inceptiond-shed-2');
    expect(config.model.cacheDir).toBe(path.join(dir, 'state', 'models'));
    expect(config.model.path).toBe('');
    expect(config.inference.threads).toBe(Math.min(os.availableParallelism(), 2));
    expect(config.sources.map((s) => s.id)).toEqual(['camera']);
  });

  it('shares the cores between inference workers: automatic threads are per worker', () => {
    const file = writeConfig({ inference: { workers: 2 } });
    const { config } = loadConfig({ file, env: {} });
    expect(config.inference.workers).toBe(2);
    // Two cores, two workers: one thread each (four cores: two each, as one worker gets).
    expect(config.inference.threads).toBe(Math.max(1, Math.floor(Math.min(os.availableParallelism(), 4) / 2)));
    expect(loadConfig({ file: writeConfig({ inference: { workers: 2, threads: 3 } }), env: {} }).config.inference.threads).toBe(3);
    expect(() => loadConfig({ file: writeConfig({ inference: { workers: 0 } }), env: {} })).toThrow(/inference\.workers/);
  });

  it('takes stateDir and runtimeDir from systemd when the file does not set them', () => {
    const { config } = loadConfig({
      env: { STATE_DIRECTORY: path.join(dir, 'st'), RUNTIME_DIRECTORY: path.join(dir, 'rt') },
    });
    expect(config.stateDir).toBe(path.join(dir, 'st'));
    expect(config.runtimeDir).toBe(path.join(dir, 'rt'));
  });

  it('uses the systemd credential as the password file when mqtt.passwordFile is empty', () => {
    writeFileSync(path.join(dir, 'mqtt-password'), 'hunter2\n');
    const { config } = loadConfig({ env: { CREDENTIALS_DIRECTORY: dir } });
    expect(config.mqtt.passwordFile).toBe(path.join(dir, 'mqtt-password'));
  });

  it('rejects an unknown key, suggesting the near one', () => {
    const file = writeConfig({ capture: { webcam: { devcie: '/dev/video1' } } });
    const err = loadError({ file, env: {} });
    expect(err.message).toBe(`unknown key: capture.webcam.devcie (did you mean capture.webcam.device?) (in ${file}, line 1, column 23)`);
    expect(err.key).toBe('capture.webcam.devcie');
  });

  it('rejects a value of the wrong type', () => {
    const file = writeConfig({ capture: { intervalMs: 'fast' } });
    const err = loadError({ file, env: {} });
    expect(err.key).toBe('capture.intervalMs');
    expect(err.value).toBe('fast');
    expect(err.message).toMatch(/^invalid configuration: capture\.intervalMs = "fast": must be a whole number/);
  });

  it('rejects a value outside an enumeration', () => {
    const err = loadError({ env: { INCEPTIOND_MQTT_QOS: '7' } });
    expect(err.message).toBe('invalid configuration: mqtt.qos = 7 (from INCEPTIOND_MQTT_QOS): must be one of [0,1,2]');
    expect(err.reason).toBe('must be one of [0,1,2]');
  });

  it('has log.format: auto by default, json or pretty from a file or the environment, anything else refused', () => {
    expect(loadConfig({ env: {} }).config.log.format).toBe('auto');
    expect(loadConfig({ file: writeConfig({ log: { format: 'pretty' } }), env: {} }).config.log.format).toBe('pretty');
    expect(loadConfig({ env: { INCEPTIOND_LOG_FORMAT: 'json' } }).config.log.format).toBe('json');
    const err = loadError({ env: { INCEPTIOND_LOG_FORMAT: 'xml' } });
    expect(err.key).toBe('log.format');
    expect(err.reason).toBe('must be one of ["auto","json","pretty"]');
  });

  it('reports every problem of a file at once', () => {
    const file = writeConfig({ log: { level: 'loud' }, mqtt: { url: 'http://broker' }, nope: 1 });
    const err = loadError({ file, env: {} });
    expect(err.problems.map((p) => p.key).sort()).toEqual(['log.level', 'mqtt.url', 'nope']);
    expect(err.message.split('\n')).toHaveLength(3);
  });

  it('rejects a group given as a value', () => {
    const file = writeConfig({ mqtt: { embeddedBroker: true } });
    const err = loadError({ file, env: {} });
    expect(err.message).toBe(`invalid configuration: mqtt.embeddedBroker = true: must be an object (in ${file}, line 1, column 10)`);
  });

  it('reads yes/no words from boolean env vars, and "0" as false', () => {
    const { config } = loadConfig({
      env: { INCEPTIOND_HTTP_ENABLED: '0', INCEPTIOND_CAPTURE_FILES_LOOP: 'No', INCEPTIOND_INFERENCE_ALLOW_SPINNING: 'on' },
    });
    expect(config.http.enabled).toBe(false);
    expect(config.capture.files.loop).toBe(false);
    expect(config.inference.allowSpinning).toBe(true);
  });

  it('rejects a boolean env var that is not a boolean word, naming the variable', () => {
    const err = loadError({ env: { INCEPTIOND_HTTP_ENABLED: 'maybe' } });
    expect(err.key).toBe('http.enabled');
    expect(err.message).toMatch(/http\.enabled = "maybe" \(from INCEPTIOND_HTTP_ENABLED\): must be a boolean/);
  });

  it('rejects a number env var with trailing garbage instead of reading its prefix', () => {
    const err = loadError({ env: { INCEPTIOND_HTTP_PORT: '80abc' } });
    expect(err.key).toBe('http.port');
  });

  it('reads a list env var as comma-separated names and rejects unknown providers with the list', () => {
    expect(loadConfig({ env: { INCEPTIOND_INFERENCE_EXECUTION_PROVIDERS: 'qnn, cpu' } }).config.inference.executionProviders).toEqual([
      'qnn',
      'cpu',
    ]);
    const err = loadError({ env: { INCEPTIOND_INFERENCE_EXECUTION_PROVIDERS: 'npu,cpu' } });
    expect(err.message).toContain('unknown execution provider "npu"');
    expect(err.message).toContain('cpu, qnn, webgpu');
  });

  it.each([
    ['mqtt://h:1883', true],
    ['mqtts://h', true],
    ['ws://h/mqtt', true],
    ['wss://h', true],
    ['tcp://h', true],
    ['ssl://h', true],
    ['http://h', false],
    ['broker.lan:1883', false],
    ['mqtt://', false],
  ])('mqtt.url %s accepted: %s', (url, ok) => {
    const run = () => loadConfig({ env: { INCEPTIOND_MQTT_URL: url } });
    if (ok) expect(run().config.mqtt.url).toBe(url);
    else expect(run).toThrow(ConfigError);
  });

  it('rejects MQTT wildcards in the base topic', () => {
    expect(loadError({ env: { INCEPTIOND_MQTT_BASE_TOPIC: 'cams/+/x' } }).key).toBe('mqtt.baseTopic');
    expect(loadConfig({ env: { INCEPTIOND_MQTT_BASE_TOPIC: 'site/cams' } }).config.mqtt.baseTopic).toBe('site/cams');
  });

  it('names a missing file', () => {
    const file = path.join(dir, 'absent.json');
    const err = loadError({ file, env: {} });
    expect(err.message).toBe(`cannot read config file ${file}: ENOENT`);
  });

  it('names a file that is not JSON, on one line', () => {
    const file = writeConfig('{\n  "log": { "level": "info", }\n}');
    const err = loadError({ file, env: {} });
    expect(err.message.startsWith(`config file ${file} is not valid JSON: `)).toBe(true);
    expect(err.message).not.toContain('\n');
  });

  it('rejects a file that holds JSON but not an object', () => {
    expect(loadError({ file: writeConfig('[1, 2]'), env: {} }).message).toMatch(/must hold a JSON object/);
  });

  it('checks that the files it names can be read', () => {
    const err = loadError({ env: { INCEPTIOND_MQTT_PASSWORD_FILE: path.join(dir, 'missing.pass') } });
    expect(err.key).toBe('mqtt.passwordFile');
    expect(err.message).toContain('ENOENT');
    expect(
      loadConfig({ env: { INCEPTIOND_MQTT_PASSWORD_FILE: path.join(dir, 'missing.pass') }, checkFiles: false }).config.mqtt.passwordFile,
    ).toBe(path.join(dir, 'missing.pass'));
  });

  it('rejects __proto__ in a file without polluting Object.prototype', () => {
    const file = writeConfig('{"__proto__": {"polluted": 1}, "log": {"level": "warn"}}');
    expect(loadError({ file, env: {} }).message).toBe(`unknown key: __proto__ (in ${file}, line 1, column 2)`);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('loads the shipped default and example files', () => {
    expect(loadConfig({ file: path.join(projectRoot, 'config', 'default.json'), env: {} }).config.mqtt.qos).toBe(1);
    // checkFiles off: it names the board's CA file.
    const example = loadConfig({ file: path.join(projectRoot, 'config', 'example.json'), env: {}, checkFiles: false }).config;
    expect(example.mqtt.baseTopic).toBe('inceptiond/garden-pi');
    expect(example.http.host).toBe('127.0.0.1');
  });

  it('refuses credentials over plain TCP to a broker elsewhere, unless allowed; loopback and TLS are fine', () => {
    const credentials = { mqtt: { url: 'mqtt://broker.lan:1883', username: 'cam' } };
    const err = loadError({ file: writeConfig(credentials), env: {} });
    expect(err.key).toBe('mqtt.url');
    expect(err.message).toMatch(/unencrypted to broker\.lan: use mqtts:\/\/ or wss:\/\/.*mqtt\.allowInsecure/);
    // A password in the URL counts, and so does a systemd credential.
    expect(loadError({ env: { INCEPTIOND_MQTT_URL: 'mqtt://u:p@10.0.0.2' } }).key).toBe('mqtt.url');
    const creds = mkdtempSync(path.join(os.tmpdir(), 'creds-'));
    writeFileSync(path.join(creds, 'mqtt-password'), 'secret');
    expect(loadError({ env: { INCEPTIOND_MQTT_URL: 'mqtt://10.0.0.2', CREDENTIALS_DIRECTORY: creds } }).key).toBe('mqtt.url');
    rmSync(creds, { recursive: true });
    const allowed = { mqtt: { ...credentials.mqtt, allowInsecure: true } };
    expect(loadConfig({ file: writeConfig(allowed), env: {} }).config.mqtt.allowInsecure).toBe(true);
    expect(
      loadConfig({ env: { INCEPTIOND_MQTT_URL: 'mqtt://127.0.0.1:1883', INCEPTIOND_MQTT_USERNAME: 'cam' } }).config.mqtt.username,
    ).toBe('cam');
    expect(loadConfig({ env: { INCEPTIOND_MQTT_URL: 'mqtts://broker.lan', INCEPTIOND_MQTT_USERNAME: 'cam' } }).config.mqtt.username).toBe(
      'cam',
    );
    expect(loadConfig({ env: { INCEPTIOND_MQTT_URL: 'mqtt://broker.lan' } }).config.mqtt.url).toBe('mqtt://broker.lan');
  });

  it('exports 78 as the configuration exit code', () => {
    expect(EX_CONFIG).toBe(78);
    expect(EXIT).toEqual({ OK: 0, RUNTIME: 1, USAGE: 2, CONFIG: 78 });
  });
});
