/**
 * Where each configuration value came from (default, file and line, the settings `set` requests kept,
 * overlay, environment variable or its deprecated alias), as the loader reports it and as
 * `config print --origin` and `doctor` show it, secrets redacted.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ConfigError,
  configurationReport,
  describeOrigin,
  formatConfigurationReport,
  loadConfig,
  valuesWithOrigins,
} from '../../src/config/index.js';
import type { CommandContext } from '../../src/commands/shared.js';

const doctorCommand = vi.fn(async () => true);
vi.mock('../../src/commands/doctor-action.js', () => ({ doctorCommand }));

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'inceptiond-origins-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
  doctorCommand.mockClear();
});

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

const YAML = ['deviceId: porch', 'mqtt:', '  url: mqtt://cam:hunter2@127.0.0.1:1883', '  qos: 2', 'inference:', '  topK: 3', ''].join('\n');

describe('the origins loadConfig reports', () => {
  it('names the default, the file and line, the environment variable, its deprecated alias, the settings and the overlay', () => {
    const file = write('config.yaml', YAML);
    write('state/settings.json', JSON.stringify({ inference: { threshold: 0.3 } }, null, 2));
    const loaded = loadConfig({
      file,
      settings: true,
      overlay: { motion: { enabled: true } },
      env: {
        INCEPTIOND_STATE_DIR: path.join(dir, 'state'),
        INCEPTIOND_MQTT_QOS: '0',
        INCEPTIOND_HTTP_PORT: '9500',
        INCEPTIOND_CAPTURE_INTERVALMS: '250',
      },
    });
    const o = loaded.origins;
    expect(loaded.settingsFile).toBe(path.join(dir, 'state', 'settings.json'));
    expect(o.deviceId).toEqual({ kind: 'file', file, line: 1, column: 1 });
    expect(o['inference.topK']).toEqual({ kind: 'file', file, line: 6, column: 3 });
    expect(o['mqtt.qos']).toEqual({ kind: 'env', variable: 'INCEPTIOND_MQTT_QOS' });
    expect(loaded.config.mqtt.qos).toBe(0);
    expect(o['capture.intervalMs']).toEqual({
      kind: 'env',
      variable: 'INCEPTIOND_CAPTURE_INTERVALMS',
      replacement: 'INCEPTIOND_CAPTURE_INTERVAL_MS',
    });
    expect(o['inference.threshold']).toEqual({ kind: 'settings', file: loaded.settingsFile, line: 3, column: 5 });
    expect(loaded.config.inference.threshold).toBe(0.3);
    expect(o['motion.enabled']).toEqual({ kind: 'overlay' });
    expect(o['log.level']).toEqual({ kind: 'default' });
    expect(o['mqtt.baseTopic']).toEqual({ kind: 'default', derived: 'inceptiond/<deviceId>' });
    expect(o['inference.threads']).toEqual({ kind: 'default', derived: 'min(cores, 2 × workers) ÷ workers' });
    // One origin per key of the schema, in its order.
    expect(Object.keys(o)[0]).toBe('deviceId');
    expect(Object.keys(o)).toContain('log.format');

    expect(describeOrigin(o.deviceId!)).toBe(`file ${file}:1:1`);
    expect(describeOrigin(o['capture.intervalMs']!)).toBe(
      'env INCEPTIOND_CAPTURE_INTERVALMS (deprecated name of INCEPTIOND_CAPTURE_INTERVAL_MS)',
    );
    expect(describeOrigin(o['inference.threshold']!)).toBe(`settings ${loaded.settingsFile}:3:5`);
    expect(describeOrigin(o['mqtt.baseTopic']!)).toBe('default: inceptiond/<deviceId>');
  });

  it('leaves the settings out unless asked, and names systemd-derived defaults', () => {
    write('state/settings.json', '{"inference": {"topK": 2}}');
    const env = { STATE_DIRECTORY: path.join(dir, 'state'), RUNTIME_DIRECTORY: dir };
    const without = loadConfig({ env });
    expect(without.config.inference.topK).toBe(5);
    expect(without.settingsFile).toBeUndefined();
    const withSettings = loadConfig({ env, settings: true });
    expect(withSettings.config.inference.topK).toBe(2);
    expect(withSettings.origins['inference.topK']).toMatchObject({ kind: 'settings', line: 1, column: 16 });
    expect(withSettings.origins.stateDir).toEqual({ kind: 'default', derived: '$STATE_DIRECTORY (systemd)' });
    expect(withSettings.origins.runtimeDir).toEqual({ kind: 'default', derived: '$RUNTIME_DIRECTORY (systemd)' });
  });

  it('refuses a broken settings file as run does, naming it and saying to fix or delete it; a wrong value in it gets its line', () => {
    write('state/settings.json', '{"inference": ');
    const env = { INCEPTIOND_STATE_DIR: path.join(dir, 'state') };
    expect(() => loadConfig({ env, settings: true })).toThrow(/settings\.json is not valid JSON: .*fix or delete the file/);
    const file = write('state/settings.json', '{\n  "inference": {"topK": 0}\n}');
    expect(() => loadConfig({ env, settings: true })).toThrow(
      `invalid configuration: inference.topK = 0: must be a whole number from 1 to 1000 (in ${file}, line 2, column 17)`,
    );
  });

  it('traces each key a sources entry writes; the list itself is shown only when nothing sets it', () => {
    const file = write(
      'sources.yaml',
      ['sources:', '  - id: door', '    backend: ffmpeg', '    ffmpeg:', '      input: rtsp://u:pw@door.lan/1', ''].join('\n'),
    );
    const loaded = loadConfig({ file, env: {} });
    expect(loaded.origins['sources[0].id']).toEqual({ kind: 'file', file, line: 2, column: 5 });
    expect(loaded.origins['sources[0].ffmpeg.input']).toEqual({ kind: 'file', file, line: 5, column: 7 });
    const values = valuesWithOrigins(loaded.config, loaded.origins);
    expect(values.find((v) => v.key === 'sources')).toBeUndefined();
    // Secrets in URLs are masked.
    expect(values.find((v) => v.key === 'sources[0].ffmpeg.input')!.value).toBe('rtsp://u:***@door.lan/1');

    const fromEnv = loadConfig({ env: { INCEPTIOND_SOURCES: '[{"id": "yard", "backend": "files", "files": {"path": "/tmp"}}]' } });
    expect(fromEnv.origins['sources[0].files.path']).toEqual({ kind: 'env', variable: 'INCEPTIOND_SOURCES' });
    const none = valuesWithOrigins(loadConfig({ env: {} }).config, loadConfig({ env: {} }).origins);
    expect(none.find((v) => v.key === 'sources')).toEqual({
      key: 'sources',
      value: [],
      origin: { kind: 'default', derived: 'one source "camera" made of capture, publish, motion and snapshot' },
      from: 'default: one source "camera" made of capture, publish, motion and snapshot',
    });
  });
});

/** A context for registering one command: the -c option and a silent logger. */
function context(): CommandContext {
  return {
    configOption: () => new Option('-c, --config <file>', 'configuration file'),
    commandLogger: () => pino({ level: 'silent' }),
    takeConfigWarnings: () => [],
    loadConfig: () => {
      throw new Error('the command must load with origins, not through the context');
    },
  };
}

async function run(register: (program: Command, ctx: CommandContext) => void, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const program = new Command().exitOverride();
  register(program, context());
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  try {
    await program.parseAsync(args, { from: 'user' });
  } finally {
    vi.mocked(process.stdout.write).mockRestore();
    vi.mocked(process.stderr.write).mockRestore();
  }
  return { stdout, stderr };
}

describe('config print', () => {
  async function print(args: string[]) {
    const { register } = await import('../../src/commands/config.js');
    return run(register, ['config', 'print', ...args]);
  }

  it('still prints the effective configuration as JSON by default, secrets masked', async () => {
    const file = write('config.yaml', YAML);
    vi.stubEnv('INCEPTIOND_STATE_DIR', path.join(dir, 'state'));
    const { stdout } = await print(['-c', file]);
    const printed = JSON.parse(stdout);
    expect(printed.deviceId).toBe('porch');
    expect(printed.inference.topK).toBe(3);
    expect(printed.mqtt.url).toBe('mqtt://cam:***@127.0.0.1:1883');
    expect(stdout).not.toContain('hunter2');
  });

  it('--origin prints "key = value  (origin)" for every key, with the settings kept by set requests and env aliases', async () => {
    const file = write('config.yaml', YAML);
    const settings = write('state/settings.json', '{"inference": {"threshold": 0.25}}');
    vi.stubEnv('INCEPTIOND_STATE_DIR', path.join(dir, 'state'));
    vi.stubEnv('INCEPTIOND_HTTP_PORT', '9500');
    vi.stubEnv('INCEPTIOND_METRICS_INTERVALSEC', '15');
    const { stdout, stderr } = await print(['-c', file, '--origin']);
    const lines = stdout.trimEnd().split('\n');
    expect(lines).toContain(`deviceId = "porch"  (file ${file}:1:1)`);
    expect(lines).toContain(`mqtt.url = "mqtt://cam:***@127.0.0.1:1883"  (file ${file}:3:3)`);
    expect(lines).toContain(`inference.threshold = 0.25  (settings ${settings}:1:16)`);
    expect(lines).toContain('http.port = 9500  (env INCEPTIOND_HTTP_PORT)');
    expect(lines).toContain(
      'metrics.intervalSec = 15  (env INCEPTIOND_METRICS_INTERVALSEC (deprecated name of INCEPTIOND_METRICS_INTERVAL_SEC))',
    );
    expect(lines).toContain('log.format = "auto"  (default)');
    expect(lines).toContain('mqtt.baseTopic = "inceptiond/porch"  (default: inceptiond/<deviceId>)');
    for (const line of lines) expect(line).toMatch(/^\S+ = .+ {2}\(.+\)$/);
    expect(stdout).not.toContain('hunter2');
    // The deprecated name is warned about on stderr, so stdout stays the listing.
    expect(stderr).toBe(
      'inceptiond: warning: INCEPTIOND_METRICS_INTERVALSEC is deprecated: rename it to INCEPTIOND_METRICS_INTERVAL_SEC (metrics.intervalSec); the old name will stop working in a later release\n',
    );
  });

  it('--origin json gives the same as a JSON report', async () => {
    const file = write('config.json', JSON.stringify({ mqtt: { url: 'mqtt://cam:hunter2@127.0.0.1' } }, null, 2));
    vi.stubEnv('INCEPTIOND_STATE_DIR', path.join(dir, 'state'));
    const { stdout } = await print(['-c', file, '--origin', 'json']);
    const report = JSON.parse(stdout) as { file: string; values: Array<{ key: string; value: unknown; origin: unknown; from: string }> };
    expect(report.file).toBe(file);
    expect(report.values.find((v) => v.key === 'mqtt.url')).toEqual({
      key: 'mqtt.url',
      value: 'mqtt://cam:***@127.0.0.1',
      origin: { kind: 'file', file, line: 3, column: 5 },
      from: `file ${file}:3:5`,
    });
    expect(stdout).not.toContain('hunter2');
  });
});

describe('doctor', () => {
  it('hands the checks the values that are not defaults, with their origins', async () => {
    const file = write('config.yaml', YAML);
    vi.stubEnv('INCEPTIOND_STATE_DIR', path.join(dir, 'state'));
    vi.stubEnv('INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS', '5000');
    const { register } = await import('../../src/commands/doctor.js');
    await run(register, ['doctor', '-c', file]);
    expect(doctorCommand).toHaveBeenCalledTimes(1);
    const [config, , opts] = doctorCommand.mock.calls[0] as unknown as [
      { deviceId: string },
      unknown,
      { json: boolean; configuration: ReturnType<typeof configurationReport> },
    ];
    expect(config.deviceId).toBe('porch');
    expect(opts.json).toBe(false);
    const keys = opts.configuration.values.map((v) => v.key);
    expect(keys).toEqual(['deviceId', 'stateDir', 'capture.webcam.timeoutMs', 'inference.topK', 'mqtt.url', 'mqtt.qos']);
    expect(opts.configuration.values.find((v) => v.key === 'mqtt.url')!.value).toBe('mqtt://cam:***@127.0.0.1:1883');
    expect(opts.configuration.warnings).toEqual([expect.stringMatching(/^INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS is deprecated/)]);
  });

  it('prints them as an indented block under the files, with the warnings', () => {
    const file = write('config.yaml', YAML);
    const loaded = loadConfig({ file, env: { INCEPTIOND_INFERENCE_TOPK: '4' } });
    const text = formatConfigurationReport(configurationReport(loaded, 'changed'));
    expect(text.split('\n')).toEqual([
      `configuration: file ${file}; 4 not default:`,
      `  deviceId = "porch"  (file ${file}:1:1)`,
      '  inference.topK = 4  (env INCEPTIOND_INFERENCE_TOPK (deprecated name of INCEPTIOND_INFERENCE_TOP_K))',
      `  mqtt.url = "mqtt://cam:***@127.0.0.1:1883"  (file ${file}:3:3)`,
      `  mqtt.qos = 2  (file ${file}:4:3)`,
      '  warning: INCEPTIOND_INFERENCE_TOPK is deprecated: rename it to INCEPTIOND_INFERENCE_TOP_K (inference.topK); the old name will stop working in a later release',
    ]);
    expect(formatConfigurationReport(configurationReport(loadConfig({ env: {} }), 'changed'))).toBe(
      'configuration: no file (defaults and environment); every value is a default',
    );
  });

  it('a configuration error is still a ConfigError (exit 78) before any check runs', async () => {
    const file = write('bad.yaml', 'mqtt:\n  qos: 9\n');
    const { register } = await import('../../src/commands/doctor.js');
    await expect(run(register, ['doctor', '-c', file])).rejects.toBeInstanceOf(ConfigError);
    expect(doctorCommand).not.toHaveBeenCalled();
  });
});
