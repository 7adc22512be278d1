/**
 * The real daemon on the WebGPU provider (a GPU's Vulkan driver, or Mesa's lavapipe in software):
 * its Results agree with the same daemon on the CPU, FP32 and INT8; the placement is logged; without
 * a Vulkan driver it falls back to the CPU with one log line; and its stdout stays JSON lines.
 */
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ResultPayload } from '../../src/publish/index.js';
import { collect, startBroker, type Collector, type TestBroker } from '../helpers/broker.js';
import { projectRoot, runCli, startDaemon, writeConfig, type DaemonProcess, type LogLine } from '../helpers/daemon-process.js';
import { writeTinyClassifier } from '../helpers/tiny-model.js';
import { SKIP, webGpuStatus } from '../helpers/tools.js';
import { sharedModelEnv } from '../global-setup.js';

let broker: TestBroker;
let work: string;
let images: string;
let tinyInt8: string;
const IMAGES = 4;
const daemons: DaemonProcess[] = [];
const collectors: Collector[] = [];

// Dawn (WebGPU's implementation) writes these to fd 2 once per process; nothing in Node can stop it.
const DAWN_NOTICE =
  /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

beforeAll(async () => {
  broker = await startBroker();
  work = await mkdtemp(path.join(tmpdir(), 'inceptiond-webgpu-it-'));
  images = path.join(work, 'images');
  await mkdir(images);
  const samples = (await readdir(path.join(projectRoot, 'models', 'samples'))).filter((f) => f.endsWith('.jpg')).sort();
  for (const f of samples.slice(0, IMAGES)) await copyFile(path.join(projectRoot, 'models', 'samples', f), path.join(images, f));

  // A small convolutional classifier, quantized by the project's own CLI: unlike the built Inception
  // with seeded weights, it does not amplify a one-step rounding difference into a different answer,
  // so INT8 on two providers can be compared with a tight tolerance.
  const tiny = await writeTinyClassifier(work, { size: 32, channels: 8, depth: 3, classes: 10, seed: 11 });
  tinyInt8 = path.join(work, 'tiny.int8.onnx');
  const quantized = await runCli(['model', 'quantize', tiny, tinyInt8, '--calibration', path.join(projectRoot, 'models', 'samples')]);
  expect(quantized.code).toBe(0);
}, 120_000);

afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await Promise.all(collectors.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await broker?.stop();
  await rm(work, { recursive: true, force: true });
});

/** Runs one daemon over the images once (no loop) and returns its Results in seq order, with its process. */
async function resultsOf(name: string, config: Record<string, unknown>, env: Record<string, string> = {}) {
  const baseTopic = `it-webgpu/${name}`;
  const file = await writeConfig(path.join(work, name), {
    deviceId: name,
    stateDir: path.join(work, name, 'state'),
    capture: { backend: 'files', intervalMs: 0, files: { path: images, loop: false } },
    mqtt: { url: broker.url, baseTopic },
    http: { enabled: false },
    metrics: { intervalSec: 0 },
    log: { level: 'info' },
    ...config,
  });
  const sub = await collect(broker.url, `${baseTopic}/camera/labels`);
  collectors.push(sub);
  // One shader cache for all these daemons: a cold one costs lavapipe about 5 s per start.
  const daemon = startDaemon(['run', '-c', file], {
    ...sharedModelEnv(inject('modelCacheDir')),
    MESA_SHADER_CACHE_DIR: path.join(work, 'mesa'),
    ...env,
  });
  daemons.push(daemon);
  await sub.waitForCount(IMAGES, { timeoutMs: 120_000 });
  const results = sub.json<ResultPayload>().sort((a, b) => a.seq - b.seq);
  expect(await daemon.stop('SIGTERM')).toBe(0);
  return { results, daemon };
}

function ready(daemon: DaemonProcess): LogLine {
  const line = daemon.logs.find((l) => String(l.msg).startsWith('inference session ready'));
  expect(line).toBeDefined();
  return line!;
}

/** Largest difference between the two daemons' scores for the same label of the same frame. */
function maxScoreDiff(a: ResultPayload[], b: ResultPayload[]): number {
  let max = 0;
  for (const [i, r] of a.entries()) {
    const other = new Map(b[i]!.labels.map((l) => [l.index, l.score]));
    for (const l of r.labels) max = Math.max(max, Math.abs(l.score - (other.get(l.index) ?? 0)));
  }
  return max;
}

describe('daemon on WebGPU', () => {
  it('runs the built Inception V2 as FP32 entirely on WebGPU, its Results equal to the CPU run within 1e-4', async (ctx) => {
    const status = await webGpuStatus();
    ctx.skip(!status.compiled, SKIP.webgpuBuild);
    ctx.skip(!status.usable, `${SKIP.webgpu}: ${status.reason}`);
    const gpu = await resultsOf('fp32-gpu', { inference: { executionProviders: ['webgpu', 'cpu'] } });
    const cpu = await resultsOf('fp32-cpu', { model: { precision: 'fp32' }, inference: { executionProviders: ['cpu'] } });

    for (const r of gpu.results) expect(r).toMatchObject({ provider: 'webgpu', model: { precision: 'fp32' } }); // auto keeps FP32 for webgpu
    expect(ready(gpu.daemon).placement).toMatchObject({ nodes: { webgpu: expect.any(Number) }, copies: 0 });
    expect(Object.keys((ready(gpu.daemon).placement as { nodes: object }).nodes)).toEqual(['webgpu']);
    expect(gpu.results.map((r) => r.labels.map((l) => l.index))).toEqual(cpu.results.map((r) => r.labels.map((l) => l.index)));
    expect(maxScoreDiff(gpu.results, cpu.results)).toBeLessThan(1e-4); // measured 3e-6
    // The log stays JSON lines on stdout; stderr has only Dawn's two notices.
    expect(gpu.daemon.otherOutput.filter((l) => !DAWN_NOTICE.test(l))).toEqual([]);
  });

  it('runs an INT8 QDQ model with QuantizeLinear on the CPU, says so, and agrees with the CPU run', async (ctx) => {
    const status = await webGpuStatus();
    ctx.skip(!status.compiled, SKIP.webgpuBuild);
    ctx.skip(!status.usable, `${SKIP.webgpu}: ${status.reason}`);
    const gpu = await resultsOf('int8-gpu', { model: { path: tinyInt8 }, inference: { executionProviders: ['webgpu', 'cpu'] } });
    const cpu = await resultsOf('int8-cpu', { model: { path: tinyInt8 }, inference: { executionProviders: ['cpu'] } });

    for (const r of gpu.results) expect(r).toMatchObject({ provider: 'webgpu', model: { precision: 'int8' } });
    const placement = ready(gpu.daemon).placement as { nodes: Record<string, number>; cpuOps: Record<string, number>; copies: number };
    expect(placement.cpuOps).toHaveProperty('QuantizeLinear');
    expect(placement.copies).toBeGreaterThan(0);
    const split = gpu.daemon.logs.find((l) => l.level === 40 && /left \d+ of \d+ nodes to the CPU/.test(String(l.msg)));
    expect(split?.msg).toMatch(/WebGPU has no QuantizeLinear kernel/);
    // WebGPU computes DQ → float op → Q where the CPU runs fused integer kernels; on this model the
    // answers match (measured: max difference 6e-8). On the built Inception with seeded weights they
    // do not (up to 0.25): one rounding step early on is amplified by its random weights.
    expect(gpu.results.map((r) => r.labels.map((l) => l.index))).toEqual(cpu.results.map((r) => r.labels.map((l) => l.index)));
    expect(maxScoreDiff(gpu.results, cpu.results)).toBeLessThan(1e-4);
  });

  it('without a Vulkan driver falls back to the CPU with one log line giving the reason, and nothing on stderr', async (ctx) => {
    ctx.skip(!(await webGpuStatus()).compiled, SKIP.webgpuBuild);
    const { results, daemon } = await resultsOf(
      'no-driver',
      { inference: { executionProviders: ['webgpu', 'cpu'] } },
      { VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' },
    );
    for (const r of results) expect(r.provider).toBe('cpu');
    const about = daemon.logs.filter((l) => l.level >= 40 && JSON.stringify(l).includes('webgpu'));
    expect(about).toHaveLength(1);
    expect(about[0]!.msg).toBe('execution provider webgpu not used: Failed to get a WebGPU adapter: No supported adapters');
    expect(daemon.otherOutput).toEqual([]);
  });
});
