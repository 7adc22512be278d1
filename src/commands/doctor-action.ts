// What `inceptiond doctor` does (loaded when it runs): checks each thing the daemon depends on and
// gives a verdict with the reason, so a user can fix a board without reading logs. Every check is
// bounded in time.
import { execFile } from 'node:child_process';
import { access, constants, mkdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import type { Logger } from 'pino';
import { sourceFromConfig } from '../capture/index.js';
import type { Config, ConfigurationReport } from '../config/index.js';
import { formatConfigurationReport, readSecretFile } from '../config/index.js';
import { formatPlacement, InferenceEngine, loadRuntime, probeProvider, type RuntimeInfo } from '../inference/index.js';
import { normalizeProviders } from '../inference/session-options.js';
import { prepareModelIsolated, sessionSettingsFor, type PreparedModel } from '../daemon/model-setup.js';
import { describeAllocator, maskCredentialsDeep, memoryAllocator, preloadFailure } from '../ops/index.js';
import { tlsFailure } from '../publish/index.js';
import { createPreprocessor } from '../vision/index.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** Machine-readable facts for `doctor --json` (e.g. the inference check's placement). */
  data?: Record<string, unknown>;
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
 * Which malloc this process runs on (run with the unit's environment, it is the daemon's). A preload
 * that ld.so could not load (libjemalloc2 not installed) fails: the unit's memory and speed figures
 * assume it (README "The memory allocator").
 */
export function checkAllocator(env: NodeJS.ProcessEnv = process.env, maps?: string | null): Check {
  const info = memoryAllocator(env, maps);
  const failure = preloadFailure(info);
  return {
    name: 'memory allocator',
    ok: !failure,
    detail: failure ?? describeAllocator(info),
    data: { allocator: info.name, settings: info.settings },
  };
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
      const capture = sourceFromConfig(source, config, logger);
      const t0 = performance.now();
      try {
        await capture.start();
        const frame = await timed(20_000, 'capture', (signal) => capture.next(signal));
        const size = await createPreprocessor({
          name: 'probe',
          layout: 'NCHW',
          width: 8,
          height: 8,
          channels: 'RGB',
          scale: 1,
          mean: [0, 0, 0],
          std: [1, 1, 1],
          resize: 'fill',
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
  let runtime: RuntimeInfo;
  try {
    runtime = loadRuntime(config.inference.runtime).info;
  } catch (err) {
    return [{ name: 'onnxruntime', ok: false, detail: (err as Error).message }];
  }
  checks.push({
    name: 'onnxruntime',
    ok: true,
    detail: `onnxruntime-node ${runtime.version} (${runtime.path}) on ${process.platform}-${process.arch}`,
    data: { ...runtime },
  });
  let model: PreparedModel;
  try {
    model = await prepareModelIsolated(config, logger, { logFd: 2 });
  } catch (err) {
    checks.push({ name: 'model', ok: false, detail: (err as Error).message });
    return checks;
  }
  checks.push({
    name: 'model',
    ok: true,
    detail: `${model.modelPath} (${model.manifest.name}, ${model.precision}${model.synthetic ? ', SYNTHETIC weights: labels are meaningless' : ''})`,
    data: { path: model.modelPath, name: model.manifest.name, precision: model.precision, synthetic: model.synthetic },
  });

  // A provider compiled into the build may still be unusable (CUDA without its libraries, WebGPU
  // without a Vulkan driver): each is tried on the model, in a child process.
  const settings = sessionSettingsFor(config, model);
  const usable: string[] = [];
  const unusable: Record<string, string> = {};
  for (const provider of runtime.providers) {
    if (provider === 'cpu') {
      usable.push(provider);
      continue;
    }
    const probe = await probeProvider(settings, provider);
    if (probe.ok) usable.push(provider);
    else unusable[provider] = missingLibraryHint(provider, probe.reason ?? 'failed');
  }
  const wanted = normalizeProviders(config.inference.executionProviders);
  const configuredUsable = wanted.filter((p) => usable.includes(p));
  const notCompiled = wanted.filter((p) => !runtime.providers.includes(p));
  checks.push({
    name: 'execution providers',
    ok: configuredUsable.length > 0,
    detail:
      `usable here: ${usable.join(', ')}; configured: ${wanted.join(', ')}` +
      Object.entries(unusable)
        .map(([p, reason]) => `; ${p} is compiled in but cannot run: ${reason}`)
        .join('') +
      (notCompiled.length
        ? `; not in this build: ${notCompiled.join(', ')} (an NPU provider needs an onnxruntime-node built for the board: inference.runtime)`
        : ''),
    data: { usable, unusable, configured: wanted, compiled: runtime.providers },
  });

  try {
    const engine = await InferenceEngine.create(settings, logger);
    try {
      const skipped = engine.attempts.filter((a) => !a.ok).map((a) => `${a.provider}: ${a.reason}`);
      const info = engine.info;
      checks.push({
        name: 'inference',
        ok: true,
        detail:
          `runs on ${engine.provider}` +
          (info.placement ? ` (nodes: ${formatPlacement(info.placement)})` : '') +
          `; session load ${Math.round(info.loadMs)} ms, first run ${Math.round(info.warmupMs)} ms` +
          (skipped.length ? `; skipped ${skipped.join('; ')}` : ''),
        data: {
          provider: engine.provider,
          placement: info.placement?.nodes,
          cpuOps: info.placement?.cpuOps,
          copies: info.placement?.copies,
          loadMs: Math.round(info.loadMs),
          firstRunMs: Math.round(info.warmupMs),
          attempts: engine.attempts,
        },
      });
    } finally {
      await engine.close();
    }
  } catch (err) {
    checks.push({ name: 'inference', ok: false, detail: (err as Error).message });
  }
  return checks;
}

/** CUDA and TensorRT are compiled into the x64 binding, but their libraries come only from its install script. */
function missingLibraryHint(provider: string, reason: string): string {
  if (!/Failed to load shared library/i.test(reason)) return reason;
  return `${reason} (libonnxruntime_providers_${provider}.so is not installed beside the binding; onnxruntime-node's install script fetches it with ONNXRUNTIME_NODE_INSTALL=cuda12)`;
}

/**
 * Connects as the daemon would: the same URL, credentials and TLS files (mqtt.ca, mqtt.cert, mqtt.key,
 * read as the daemon reads them), so a broker the daemon can reach passes and one it cannot fails with
 * the reason.
 */
export async function checkBroker(config: Config): Promise<Check> {
  const name = 'MQTT broker';
  const m = config.mqtt;
  if (m.embeddedBroker.enabled) {
    return {
      name,
      ok: true,
      detail: `embedded broker on ${m.embeddedBroker.host}:${m.embeddedBroker.port} (started by the daemon)`,
    };
  }
  let password: string | undefined;
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  try {
    password = m.passwordFile ? await readSecretFile(m.passwordFile, 'mqtt.passwordFile') : undefined;
    for (const key of ['ca', 'cert', 'key'] as const) {
      const file = m[key];
      if (!file) continue;
      try {
        tls[key] = await readFile(file);
      } catch (err) {
        throw new Error(`mqtt.${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
  } catch (err) {
    return { name, ok: false, detail: (err as Error).message };
  }
  const t0 = performance.now();
  const client = mqtt.connect(m.url, {
    clientId: `${m.clientId}-doctor`,
    protocolVersion: m.protocolVersion,
    username: m.username || undefined,
    password,
    ...tls,
    connectTimeout: 5_000,
    reconnectPeriod: 0,
    rejectUnauthorized: m.rejectUnauthorized,
  });
  try {
    await timed(
      10_000,
      'connect',
      () =>
        new Promise<void>((resolve, reject) => {
          client.once('connect', () => resolve());
          client.once('error', reject);
          client.once('close', () => reject(new Error('connection closed')));
        }),
    );
    const secured = /^(mqtts|wss):/i.test(m.url) ? (m.ca ? ', TLS verified with mqtt.ca' : ', TLS') : '';
    const clientCert = tls.cert ? ', client certificate mqtt.cert' : '';
    return { name, ok: true, detail: `connected to ${m.url} in ${Math.round(performance.now() - t0)} ms${secured}${clientCert}` };
  } catch (err) {
    const hint = tlsFailure(err as NodeJS.ErrnoException, { ca: config.mqtt.ca, clientCert: config.mqtt.cert !== '' });
    return { name, ok: false, detail: `${m.url}: ${hint ? `${hint} (${(err as Error).message})` : (err as Error).message}` };
  } finally {
    client.end(true);
  }
}

/**
 * Runs every check, prints a verdict per line (or one JSON object), and returns whether all passed.
 * `configuration` (the values that are not defaults, with their origins) is printed first.
 */
export async function doctorCommand(
  config: Config,
  logger: Logger,
  opts: { json?: boolean; configuration?: ConfigurationReport } = {},
): Promise<boolean> {
  // Before the checks, which may take a minute: what is configured, and from where, is often the answer.
  if (opts.configuration && !opts.json) process.stdout.write(`${formatConfigurationReport(opts.configuration)}\n`);
  const found: Check[] = [
    await checkStateDir(config),
    checkAllocator(),
    await checkFfmpeg(config),
    ...(await checkSources(config, logger)),
    ...(await checkModelAndProviders(config, logger)),
    await checkBroker(config),
  ];
  // A detail may quote a URL (the broker's, an RTSP camera's in an ffmpeg error): credentials are masked.
  const checks = maskCredentialsDeep(found);
  const failed = checks.filter((c) => !c.ok).length;
  if (opts.json) {
    const configuration = opts.configuration ? { configuration: opts.configuration } : {};
    process.stdout.write(`${JSON.stringify({ ok: failed === 0, ...configuration, checks }, null, 2)}\n`);
    return failed === 0;
  }
  const width = Math.max(...checks.map((c) => c.name.length));
  for (const c of checks) {
    process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(width)}  ${c.detail}\n`);
  }
  process.stdout.write(failed ? `${failed} of ${checks.length} checks failed\n` : `all ${checks.length} checks passed\n`);
  return failed === 0;
}
