// `inceptiond doctor`: checks each thing the daemon depends on and gives a verdict with the reason,
// so a user can fix a board without reading logs. Every check is bounded in time.
import { execFile } from 'node:child_process';
import { access, constants, mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { listSupportedBackends } from 'onnxruntime-node';
import type { Logger } from 'pino';
import { createSource } from './capture/index.js';
import type { Config } from './config/index.js';
import { readSecretFile } from './config/index.js';
import { InferenceEngine } from './inference/index.js';
import { prepareModel, sessionSettingsFor } from './model-setup.js';
import { toSourceOptions } from './source-options.js';
import { createPreprocessor } from './vision/index.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

async function timed<T>(ms: number, what: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work(ac.signal),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          ac.abort();
          reject(new Error(`${what}: no answer within ${ms / 1000} s`));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function checkStateDir(config: Config): Promise<Check> {
  try {
    await mkdir(config.stateDir, { recursive: true });
    await access(config.stateDir, constants.W_OK);
    return { name: 'state directory', ok: true, detail: `${config.stateDir} is writable` };
  } catch (err) {
    return { name: 'state directory', ok: false, detail: `${config.stateDir}: ${(err as Error).message}` };
  }
}

/**
 * Which ffmpeg the ffmpeg sources would run (capture.ffmpeg.path, else PATH) and its version. Only a
 * failure when a source uses it: the other backends do not need ffmpeg.
 */
export async function checkFfmpeg(config: Config): Promise<Check> {
  const users = config.sources.filter((s) => s.backend === 'ffmpeg');
  const bins = [...new Set((users.length ? users : [config.sources[0] ?? config.capture]).map((s) => s.ffmpeg.path || 'ffmpeg'))];
  const details: string[] = [];
  let ok = true;
  for (const bin of bins) {
    try {
      const { stdout } = await promisify(execFile)(bin, ['-hide_banner', '-version'], { timeout: 10_000 });
      // "ffmpeg version 5.1.6-0+deb12u1 Copyright (c) …": the version, without the copyright.
      const version = (stdout.split('\n')[0] ?? '').replace(/\s+Copyright.*$/, '').trim();
      const resolved = bin.includes('/') ? bin : await which(bin);
      details.push(`${resolved ?? bin}: ${version}`);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (err as Error).message.split('\n')[0];
      if (users.length) {
        ok = false;
        details.push(`${bin}: ${reason} (install ffmpeg, e.g. apt install ffmpeg, or set capture.ffmpeg.path)`);
      } else {
        details.push(`${bin}: ${reason} (only needed by capture.backend ffmpeg)`);
      }
    }
  }
  return { name: 'ffmpeg', ok, detail: details.join('; ') };
}

async function which(name: string): Promise<string | undefined> {
  try {
    const { stdout } = await promisify(execFile)('sh', ['-c', 'command -v "$1"', 'sh', name], { timeout: 5_000 });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

async function checkSources(config: Config, logger: Logger): Promise<Check[]> {
  const checks: Check[] = [];
  for (const source of config.sources) {
    const name = `camera "${source.id}" (${source.backend})`;
    try {
      const capture = createSource(toSourceOptions(source, config), logger);
      const t0 = performance.now();
      try {
        await capture.start();
        const frame = await timed(20_000, 'capture', (signal) => capture.next(signal));
        const size = await createPreprocessor({
          name: 'probe', layout: 'NCHW', width: 8, height: 8, channels: 'RGB', scale: 1,
          mean: [0, 0, 0], std: [1, 1, 1], resize: 'fill',
        })(frame.data);
        checks.push({
          name,
          ok: true,
          detail: `captured a ${size.width}×${size.height} frame in ${Math.round(performance.now() - t0)} ms`,
        });
      } finally {
        await capture.stop();
      }
    } catch (err) {
      checks.push({ name, ok: false, detail: (err as Error).message });
    }
  }
  return checks;
}

async function checkModelAndProviders(config: Config, logger: Logger): Promise<Check[]> {
  const checks: Check[] = [];
  const compiled = listSupportedBackends().map((b) => b.name);
  const wanted = config.inference.executionProviders;
  const missing = wanted.filter((p) => !compiled.includes(p));
  checks.push({
    name: 'execution providers',
    ok: wanted.some((p) => compiled.includes(p)),
    detail:
      `configured [${wanted.join(', ')}]; this onnxruntime-node build has [${compiled.join(', ')}]` +
      (missing.length ? `; not available: ${missing.join(', ')} (an NPU provider needs an ONNX Runtime built for the board)` : ''),
  });
  try {
    const model = await prepareModel(config, logger);
    checks.push({
      name: 'model',
      ok: true,
      detail: `${model.modelPath} (${model.manifest.name}, ${model.precision}${model.synthetic ? ', SYNTHETIC weights: labels are meaningless' : ''})`,
    });
    const engine = await InferenceEngine.create(sessionSettingsFor(config, model), logger);
    try {
      const skipped = engine.attempts.filter((a) => !a.ok).map((a) => `${a.provider}: ${a.reason}`);
      const info = engine.info;
      checks.push({
        name: 'inference',
        ok: true,
        detail:
          `runs on ${engine.provider}; session load ${Math.round(info.loadMs)} ms, first run ${Math.round(info.warmupMs)} ms` +
          (skipped.length ? `; skipped ${skipped.join('; ')}` : ''),
      });
    } finally {
      await engine.close();
    }
  } catch (err) {
    checks.push({ name: 'model', ok: false, detail: (err as Error).message });
  }
  return checks;
}

async function checkBroker(config: Config): Promise<Check> {
  const name = 'MQTT broker';
  if (config.mqtt.embeddedBroker.enabled) {
    return { name, ok: true, detail: `embedded broker on ${config.mqtt.embeddedBroker.host}:${config.mqtt.embeddedBroker.port} (started by the daemon)` };
  }
  let password: string | undefined;
  try {
    password = config.mqtt.passwordFile ? await readSecretFile(config.mqtt.passwordFile, 'mqtt.passwordFile') : undefined;
  } catch (err) {
    return { name, ok: false, detail: (err as Error).message };
  }
  const t0 = performance.now();
  const client = mqtt.connect(config.mqtt.url, {
    clientId: `${config.mqtt.clientId}-doctor`,
    protocolVersion: config.mqtt.protocolVersion,
    username: config.mqtt.username || undefined,
    password,
    connectTimeout: 5_000,
    reconnectPeriod: 0,
    rejectUnauthorized: config.mqtt.rejectUnauthorized,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('connection closed')));
    });
    return { name, ok: true, detail: `connected to ${config.mqtt.url} in ${Math.round(performance.now() - t0)} ms` };
  } catch (err) {
    return { name, ok: false, detail: `${config.mqtt.url}: ${(err as Error).message}` };
  } finally {
    client.end(true);
  }
}

/** Runs every check, prints a verdict per line, and returns whether all passed. */
export async function doctorCommand(config: Config, logger: Logger): Promise<boolean> {
  const checks: Check[] = [
    await checkStateDir(config),
    await checkFfmpeg(config),
    ...(await checkSources(config, logger)),
    ...(await checkModelAndProviders(config, logger)),
    await checkBroker(config),
  ];
  const width = Math.max(...checks.map((c) => c.name.length));
  for (const c of checks) {
    process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(width)}  ${c.detail}\n`);
  }
  const failed = checks.filter((c) => !c.ok).length;
  process.stdout.write(failed ? `${failed} of ${checks.length} checks failed\n` : `all ${checks.length} checks passed\n`);
  return failed === 0;
}
