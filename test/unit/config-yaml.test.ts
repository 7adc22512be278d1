/**
 * YAML configuration files (.yaml, .yml) beside JSON: the same schema and the same errors, and every
 * error about a key written in a file (YAML or JSON) names the line and column where it is written.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, EX_CONFIG, loadConfig, projectRoot, type LoadConfigOptions } from '../../src/config/index.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'inceptiond-yaml-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function loadError(options: LoadConfigOptions): ConfigError {
  try {
    loadConfig({ env: {}, ...options });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('loadConfig accepted an invalid configuration');
}

describe('YAML configuration files', () => {
  it('config/example.yaml loads, validates and means what config/example.json means', () => {
    const yaml = loadConfig({ file: path.join(projectRoot, 'config', 'example.yaml'), env: {}, checkFiles: false });
    const json = loadConfig({ file: path.join(projectRoot, 'config', 'example.json'), env: {}, checkFiles: false });
    expect(yaml.config.deviceId).toBe('garden-pi');
    expect(yaml.config.mqtt.url).toBe('mqtts://broker.lan:8883');
    expect(yaml.config.inference.executionProviders).toEqual(['cpu']);
    expect(yaml.config).toEqual(json.config);
    // A value the file sets is traced to its line.
    expect(yaml.origins['capture.webcam.timeoutMs']).toMatchObject({ kind: 'file', file: yaml.file, line: expect.any(Number) });
  });

  it('reads .yml too, and an empty YAML file (or one of comments) means all defaults', () => {
    expect(loadConfig({ file: write('c.yml', 'inference:\n  topK: 2\n'), env: {} }).config.inference.topK).toBe(2);
    expect(loadConfig({ file: write('empty.yaml', ''), env: {} }).config.inference.topK).toBe(5);
    expect(loadConfig({ file: write('comments.yaml', '# nothing yet\n'), env: {} }).config.inference.topK).toBe(5);
  });

  it('refuses a wrong value naming the key, the value, the reason and the line and column', () => {
    const file = write('bad.yaml', 'deviceId: porch\nmqtt:\n  url: mqtt://127.0.0.1\n  qos: 7\n');
    const err = loadError({ file });
    expect(err.message).toBe(`invalid configuration: mqtt.qos = 7: must be one of [0,1,2] (in ${file}, line 4, column 3)`);
    expect(err.problems[0]).toMatchObject({ key: 'mqtt.qos', value: 7, file, line: 4, column: 3 });
  });

  it('refuses an unknown key with its line, suggesting the near one', () => {
    const file = write('typo.yaml', 'capture:\n  webcam:\n    devcie: /dev/video1\n');
    expect(loadError({ file }).message).toBe(
      `unknown key: capture.webcam.devcie (did you mean capture.webcam.device?) (in ${file}, line 3, column 5)`,
    );
  });

  it('keeps refusing numbers written as strings, as in JSON, and takes unquoted numbers', () => {
    const file = write('quoted.yaml', 'inference:\n  topK: "3"\n');
    const err = loadError({ file });
    expect(err.message).toBe(
      `invalid configuration: inference.topK = "3": must be a number, not a string (quotes are for environment variables only) (in ${file}, line 2, column 3)`,
    );
    expect(loadConfig({ file: write('plain.yaml', 'inference:\n  topK: 3\n'), env: {} }).config.inference.topK).toBe(3);
  });

  it("takes the boolean words yes/no/on/off as a JSON file does (the schema's words, not YAML 1.1's), and refuses others with the line", () => {
    expect(loadConfig({ file: write('yes.yaml', 'http:\n  enabled: no\n'), env: {} }).config.http.enabled).toBe(false);
    expect(loadConfig({ file: write('yes.json', '{"http": {"enabled": "no"}}'), env: {} }).config.http.enabled).toBe(false);
    const file = write('maybe.yaml', 'http:\n  enabled: maybe\n');
    const err = loadError({ file });
    expect(err.key).toBe('http.enabled');
    expect(err.value).toBe('maybe');
    expect(err.message).toMatch(/must be a boolean.* \(in .*maybe\.yaml, line 2, column 3\)$/);
    // YAML 1.1's other spellings (y, n) are plain text in YAML 1.2.
    expect(loadError({ file: write('y.yaml', 'http:\n  enabled: y\n') }).value).toBe('y');
  });

  it('names the entry of sources and the line of its key; a required key left out gets the line of its entry', () => {
    const file = write(
      'sources.yaml',
      [
        'sources:',
        '  - id: front',
        '    backend: files',
        `    files: { path: ${dir} }`,
        '  - id: door',
        '    backend: ffmpeg',
        '    ffmpeg:',
        '      fps: 500',
        '',
      ].join('\n'),
    );
    const err = loadError({ file });
    expect(err.problems.map((p) => p.message)).toEqual([
      `invalid configuration: sources[1].ffmpeg.fps = 500: must be 0 or a number from 0.01 to 240 (in ${file}, line 8, column 7)`,
    ]);
    const missing = write('missing.yaml', ['sources:', '  - id: door', '    backend: ffmpeg', ''].join('\n'));
    expect(loadError({ file: missing }).message).toBe(
      `invalid configuration: sources[0].ffmpeg.input = "": is required when the backend is ffmpeg (in sources[0], ${missing}, line 2, column 5)`,
    );
  });

  it('takes anchors and merge keys, so sources can share settings', () => {
    const file = write(
      'anchors.yaml',
      [
        'x-cam: &cam',
        '  backend: ffmpeg',
        '  intervalMs: 250',
        'sources:',
        '  - <<: *cam',
        '    id: door',
        '    ffmpeg: { input: "rtsp://door.lan/1" }',
        '  - <<: *cam',
        '    id: yard',
        '    ffmpeg: { input: "rtsp://yard.lan/1" }',
        '',
      ].join('\n'),
    );
    // x-cam is not a key of the schema: refused, as any unknown key.
    expect(loadError({ file }).message).toMatch(/^unknown key: x-cam .*line 1, column 1\)$/);
    const ok = write(
      'anchors-ok.yaml',
      [
        'sources:',
        '  - &cam',
        '    id: door',
        '    backend: ffmpeg',
        '    intervalMs: 250',
        '    ffmpeg: { input: "rtsp://door.lan/1" }',
        '  - <<: *cam',
        '    id: yard',
        '    ffmpeg: { input: "rtsp://yard.lan/1" }',
        '',
      ].join('\n'),
    );
    const { config } = loadConfig({ file: ok, env: {} });
    expect(config.sources.map((s) => [s.id, s.backend, s.intervalMs, s.ffmpeg.input])).toEqual([
      ['door', 'ffmpeg', 250, 'rtsp://door.lan/1'],
      ['yard', 'ffmpeg', 250, 'rtsp://yard.lan/1'],
    ]);
  });

  it('names the file and the line of a YAML syntax error, on one line each', () => {
    const file = write('broken.yaml', 'mqtt:\n  url: mqtt://127.0.0.1\n qos: 1\n');
    const err = loadError({ file });
    expect(err.key).toBeUndefined();
    expect(err.problems[0]!.message).toMatch(new RegExp(`^config file ${file} is not valid YAML: .+ \\(line 3, column \\d+\\)$`));
    for (const p of err.problems) expect(p.message).not.toContain('\n');
    const tabs = write('tabs.yaml', 'mqtt:\n\tqos: 1\n');
    expect(loadError({ file: tabs }).message).toMatch(/is not valid YAML: Tabs are not allowed as indentation \(line 2, column 1\)/);
    const twice = write('twice.yaml', 'log:\n  level: info\nlog:\n  level: warn\n');
    expect(loadError({ file: twice }).message).toMatch(/is not valid YAML: Map keys must be unique \(line 3, column 1\)/);
    const docs = write('docs.yaml', 'log: {level: info}\n---\nlog: {level: warn}\n');
    expect(loadError({ file: docs }).message).toMatch(
      /is not valid YAML: holds more than one document \(---\): a config file holds one \(line 2/,
    );
  });

  it('refuses a file that is not a mapping, YAML 1.1 tags, and alias bombs', () => {
    expect(loadError({ file: write('list.yaml', '- a\n- b\n') }).message).toMatch(/must hold a YAML mapping/);
    expect(loadError({ file: write('list.yaml', '- a\n- b\n') }).reason).toBe('not an object');
    // Would be a Buffer: reported instead.
    expect(loadError({ file: write('tag.yaml', 'deviceId: !!binary aGVsbG8=\n') }).message).toMatch(
      /is not valid YAML: .*tag.* \(line 1, column 11\)/i,
    );
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x, x]',
      ...'bcdefghi'.split('').map((c, i) => `${c}: &${c} [${Array(10).fill(`*${'abcdefghi'[i]}`).join(', ')}]`),
    ].join('\n');
    const err = loadError({ file: write('bomb.yaml', `${bomb}\n`) });
    expect(err.message).toMatch(/is not valid YAML: .*alias/i);
  });

  it('refuses __proto__ in YAML as an unknown key, without touching Object.prototype', () => {
    const file = write('proto.yaml', '__proto__:\n  polluted: 1\nlog:\n  level: warn\n');
    expect(loadError({ file }).message).toBe(`unknown key: __proto__ (in ${file}, line 1, column 1)`);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('an invalid YAML or JSON configuration is a ConfigError, which the CLI turns into exit 78', () => {
    expect(loadError({ file: write('x.yaml', 'mqtt: [') })).toBeInstanceOf(ConfigError);
    expect(EX_CONFIG).toBe(78);
  });
});

describe('JSON files: the line and column of a key', () => {
  it('names where the key is written in a pretty-printed file', () => {
    const file = write('pretty.json', JSON.stringify({ deviceId: 'porch', mqtt: { url: 'mqtt://127.0.0.1', qos: 7 } }, null, 2));
    const err = loadError({ file });
    expect(err.message).toBe(`invalid configuration: mqtt.qos = 7: must be one of [0,1,2] (in ${file}, line 5, column 5)`);
    expect(err.problems[0]).toMatchObject({ file, line: 5, column: 5 });
  });

  it('follows string escapes, nested lists and a key written twice (the last one counts, as JSON.parse does)', () => {
    const text =
      '{"deviceId": "a\\"b{[", "inference": {"executionProviders": ["cpu", "x{"]},\n "log": {"level": "info"}, "log": {"level": "loud"}}';
    const file = write('tricky.json', text);
    const err = loadError({ file });
    const byKey = Object.fromEntries(err.problems.map((p) => [p.key, p]));
    expect(byKey['inference.executionProviders']).toMatchObject({ line: 1, column: 38 });
    expect(byKey['log.level']).toMatchObject({ line: 2, column: 36 });
  });

  it('names the entry of sources in JSON as in YAML', () => {
    const file = write('sources.json', JSON.stringify({ sources: [{ id: 'door', backend: 'ffmpeg' }] }, null, 2));
    expect(loadError({ file }).message).toBe(
      `invalid configuration: sources[0].ffmpeg.input = "": is required when the backend is ffmpeg (in sources[0], ${file}, line 3, column 5)`,
    );
  });

  it('does not name a line for a value from the environment (it names the variable), even when the file has the key', () => {
    const file = write('env.json', JSON.stringify({ mqtt: { qos: 1 } }, null, 2));
    const err = loadError({ file, env: { INCEPTIOND_MQTT_QOS: '9' } });
    expect(err.message).toBe('invalid configuration: mqtt.qos = 9 (from INCEPTIOND_MQTT_QOS): must be one of [0,1,2]');
  });

  it('accepts a byte-order mark', () => {
    expect(loadConfig({ file: write('bom.json', '\uFEFF{"inference": {"topK": 2}}'), env: {} }).config.inference.topK).toBe(2);
  });
});

describe('"$schema" in a file', () => {
  it('is accepted at the top level of JSON and YAML (for editors), and refused when not a string', () => {
    const json = write('s.json', JSON.stringify({ $schema: './inceptiond.schema.json', inference: { topK: 2 } }));
    expect(loadConfig({ file: json, env: {} }).config.inference.topK).toBe(2);
    const yaml = write('s.yaml', '$schema: ./inceptiond.schema.json\ninference:\n  topK: 2\n');
    expect(loadConfig({ file: yaml, env: {} }).config.inference.topK).toBe(2);
    const bad = write('bad.json', '{\n  "$schema": 3\n}');
    expect(loadError({ file: bad }).message).toBe(
      `invalid configuration: $schema = 3: must be a string: the URL or path of the JSON Schema, for editors (in ${bad}, line 2, column 3)`,
    );
    // Only at the top: elsewhere it is an unknown key.
    expect(loadError({ file: write('deep.json', '{"mqtt": {"$schema": "x"}}') }).message).toMatch(/^unknown key: mqtt\.\$schema/);
  });
});
