/**
 * The CLI as a user meets it: `config check` on bad files (exit 78, naming key, value and reason), and
 * `npm start`'s command (`run -c config/development.json`) with its embedded broker, or publishing to a
 * broker that already listens on that port; Ctrl-C stops it cleanly.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { validateResult, type ResultPayload } from '../../src/publish/index.js';
import { collect, freePort, startBroker, type Collector } from '../helpers/broker.js';
import { runCli, startDaemon, type DaemonProcess } from '../helpers/daemon-process.js';
import { sharedModelEnv } from '../global-setup.js';

let work: string;
const daemons: DaemonProcess[] = [];
const collectors: Collector[] = [];

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-it-cli-'));
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await Promise.all(collectors.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function configFile(name: string, text: string): Promise<string> {
  const file = path.join(work, name);
  await writeFile(file, text);
  return file;
}

describe('config check', () => {
  it('accepts a good file', async () => {
    const file = await configFile('good.json', JSON.stringify({ capture: { intervalMs: 500 }, inference: { topK: 3 } }));
    const out = await runCli(['config', 'check', '-c', file]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('configuration is valid');
  });

  it.each([
    ['an unknown key', '{"capture":{"intervallMs":5}}', /capture\.intervallMs.*did you mean capture\.intervalMs/],
    ['a wrong type', '{"capture":{"intervalMs":"fast"}}', /capture\.intervalMs = "fast": must be a whole number/],
    ['a value out of range', '{"mqtt":{"qos":3}}', /mqtt\.qos = 3/],
    ['broken JSON', '{"mqtt": {', /not valid JSON.*line 1/],
    [
      'options for an unknown provider',
      '{"inference":{"providerOptions":{"npu":{"a":"b"}}}}',
      /inference\.providerOptions = .*names unknown execution provider "npu"/,
    ],
    [
      'a provider option that is an object',
      '{"inference":{"providerOptions":{"qnn":{"backend_path":{"x":1}}}}}',
      /inference\.providerOptions = .*\.qnn\.backend_path must be a string, a number or a list of strings/,
    ],
  ])('refuses %s with exit 78 and says what is wrong', async (_what, text, message) => {
    const file = await configFile(`bad-${Math.random().toString(16).slice(2)}.json`, text);
    const out = await runCli(['config', 'check', '-c', file]);
    expect(out.code).toBe(78);
    expect(out.stderr).toMatch(message);
    expect(out.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
  });

  it('refuses a missing file and a bad environment value with exit 78, also for `run`', async () => {
    const missing = await runCli(['config', 'check', '-c', path.join(work, 'nope.json')]);
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain(path.join(work, 'nope.json'));

    const env = await runCli(['run'], { INCEPTIOND_CAPTURE_INTERVAL_MS: 'soon', INCEPTIOND_CONFIG: undefined });
    expect(env.code).toBe(78);
    expect(env.stderr).toMatch(/capture\.intervalMs.*"soon"/);
  });
});

describe('config print', () => {
  it('shows provider options and the runtime as configured', async () => {
    const file = await configFile(
      'npu.json',
      JSON.stringify({
        inference: {
          executionProviders: ['qnn', 'cpu'],
          providerOptions: { qnn: { backend_path: 'libQnnHtp.so', htp_performance_mode: 'burst' } },
          runtime: '/opt/ort-qnn',
        },
      }),
    );
    const out = await runCli(['config', 'print', '-c', file]);
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout).inference).toMatchObject({
      executionProviders: ['qnn', 'cpu'],
      providerOptions: { qnn: { backend_path: 'libQnnHtp.so', htp_performance_mode: 'burst' } },
      cpuFallback: true,
      runtime: '/opt/ort-qnn',
    });
  });
});

describe('classify', () => {
  it('--json keeps stdout for the results: the provider fallback warning goes to stderr', async () => {
    const images = ['01-sunset.jpg', '04-checker.jpg'].map((f) => path.join('models', 'samples', f));
    const out = await runCli(['classify', '--json', '--top', '3', ...images], {
      ...sharedModelEnv(inject('modelCacheDir')),
      INCEPTIOND_STATE_DIR: path.join(work, 'state-classify'),
      INCEPTIOND_INFERENCE_EXECUTION_PROVIDERS: '["qnn","cpu"]',
    });
    expect(out.code).toBe(0);
    const lines = out.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { image: string; provider: string; labels: unknown[] });
    expect(lines.map((l) => l.image)).toEqual(images);
    for (const l of lines) expect(l).toMatchObject({ provider: 'cpu', labels: expect.any(Array) });
    const warning = out.stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { provider?: string; msg: string });
    expect(warning).toContainEqual(
      expect.objectContaining({ provider: 'qnn', msg: 'execution provider qnn not used: not compiled into this onnxruntime-node build' }),
    );
  });
});

describe('doctor', () => {
  it('--json gives every check, with the providers that can run and the node placement of the model', async () => {
    const out = await runCli(['doctor', '--json', '-c', 'config/development.json'], {
      ...sharedModelEnv(inject('modelCacheDir')),
      INCEPTIOND_STATE_DIR: path.join(work, 'state-doctor'),
      LD_PRELOAD: undefined,
    });
    expect(out.code).toBe(0);
    const report = JSON.parse(out.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; data?: Record<string, unknown> }> };
    expect(report.ok).toBe(true);
    const check = (name: string) => report.checks.find((c) => c.name === name)!;
    expect(report.checks.map((c) => c.name)).toEqual(
      expect.arrayContaining([
        'state directory',
        'memory allocator',
        'ffmpeg',
        'camera "camera" (files)',
        'onnxruntime',
        'model',
        'execution providers',
        'inference',
        'MQTT broker',
      ]),
    );
    const providers = check('execution providers').data as { usable: string[]; unusable: Record<string, string>; compiled: string[] };
    expect(providers.usable).toContain('cpu');
    // Compiled in but without their libraries (onnxruntime-node's install script was not allowed to fetch them).
    for (const p of ['cuda', 'tensorrt'].filter((x) => providers.compiled.includes(x))) {
      expect(providers.usable).not.toContain(p);
      expect(providers.unusable[p]).toMatch(/Failed to load shared library/);
    }
    // Without LD_PRELOAD: glibc's malloc, and the check says so.
    expect(check('memory allocator')).toMatchObject({ ok: true, data: { allocator: 'glibc' } });
    const inference = check('inference').data as { provider: string; placement: Record<string, number> };
    expect(inference.provider).toBe('cpu');
    expect(Object.keys(inference.placement)).toEqual(['cpu']);
    expect(inference.placement.cpu).toBeGreaterThan(50); // the INT8 Inception V2's fused nodes
  });
});

describe('run with a model that cannot be loaded', () => {
  it('exits 1 with a fatal log line naming the file (model setup runs in a child process)', async () => {
    const missing = path.join(work, 'no-such-model.onnx');
    const daemon = startDaemon(['run', '-c', 'config/development.json'], {
      INCEPTIOND_STATE_DIR: path.join(work, 'state-missing-model'),
      INCEPTIOND_MODEL_PATH: missing,
      INCEPTIOND_MQTT_EMBEDDED_BROKER_ENABLED: 'false',
      INCEPTIOND_HTTP_ENABLED: 'false',
    });
    daemons.push(daemon);
    expect(await daemon.exited).toBe(1);
    const fatal = daemon.logs.find((l) => l.level === 60);
    expect(fatal?.msg).toContain(missing);
  });
});

describe('npm start (run -c config/development.json)', () => {
  async function devDaemon(port: number): Promise<DaemonProcess> {
    const daemon = startDaemon(['run', '-c', 'config/development.json'], {
      ...sharedModelEnv(inject('modelCacheDir')),
      INCEPTIOND_STATE_DIR: path.join(work, `state-${port}`),
      INCEPTIOND_MQTT_URL: `mqtt://127.0.0.1:${port}`,
      INCEPTIOND_MQTT_EMBEDDED_BROKER_PORT: String(port),
      INCEPTIOND_MQTT_BASE_TOPIC: 'dev',
      INCEPTIOND_HTTP_PORT: '0',
    });
    daemons.push(daemon);
    return daemon;
  }

  it('starts its embedded broker, publishes Results, tells how to watch them and stops on Ctrl-C', async () => {
    const port = await freePort();
    const daemon = await devDaemon(port);
    const running = await daemon.waitForLog((l) => typeof l.watch === 'string');
    expect(running.watch).toBe(`mosquitto_sub -h 127.0.0.1 -p ${port} -t 'dev/#' -v`);
    expect(daemon.logs.some((l) => l.msg === 'embedded MQTT broker listening')).toBe(true);
    // The synthetic model says so, in the log and in the status.
    expect(daemon.logs.some((l) => /synthetic/i.test(l.msg))).toBe(true);

    const sub = await collect(`mqtt://127.0.0.1:${port}`, 'dev/#');
    collectors.push(sub);
    const results = await sub.waitForCount(3, { filter: (m) => m.topic === 'dev/camera/labels' });
    for (const m of results) expect(validateResult(JSON.parse(m.text)).ok).toBe(true);
    const status = JSON.parse((await sub.waitFor((m) => m.topic === 'dev/status')).text);
    expect(status.model.synthetic).toBe(true);
    // npm start runs the quantized model (issue 3): the built FP32 model, quantized once and cached.
    expect(status.model.precision).toBe('int8');
    expect((JSON.parse(results[0]!.text) as ResultPayload).model.precision).toBe(status.model.precision);

    expect(await daemon.stop('SIGINT')).toBe(0);
    expect(daemon.logs.at(-1)!.msg).toBe('stopped');
    expect(daemon.otherOutput, daemon.otherOutput.join('\n')).toEqual([]);
  });

  it('publishes to a broker that already listens on the embedded port instead of failing', async () => {
    const broker = await startBroker();
    try {
      const sub = await collect(broker.url, 'dev/camera/labels');
      collectors.push(sub);
      const daemon = await devDaemon(broker.port);
      await daemon.waitForLog((l) => /already listens/.test(l.msg));
      await sub.waitForCount(2);
      expect(await daemon.stop('SIGTERM')).toBe(0);
    } finally {
      await broker.stop();
    }
  });
});
