import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crashWorkerForTest, WORKER_LIMITS } from '../../src/inference/engine.js';
import { KEEP_OPTIMIZED_MODELS } from '../../src/inference/session-cache.js';
import { sessionOptionsFor } from '../../src/inference/session-options.js';
import {
  EngineClosedError,
  InferenceEngine,
  InvalidTensorError,
  ModelLoadError,
  NoExecutionProviderError,
  RestartLimitError,
  WorkerCrashedError,
  type SessionSettings,
} from '../../src/inference/index.js';
import { directScores } from '../helpers/direct-scores.js';
import { seededInput, testSessionSettings, writeTinyModel } from '../helpers/tiny-model.js';
import { SKIP, webGpuStatus } from '../helpers/tools.js';
import { INFERENCE_THREAD_NAME, readThreadTimes, ThreadCpuMeter } from '../../src/util/index.js';

/** A pino logger whose records the test can read. */
function captureLogger() {
  const records: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), records };
}

const SIZE = 8;
const dims = [1, 3, SIZE, SIZE];
let modelPath: string;
let heavyPath: string;
const HEAVY = 96;

function settings(over: Partial<SessionSettings> = {}): SessionSettings {
  return testSessionSettings(modelPath, over);
}

beforeAll(async () => {
  modelPath = await writeTinyModel({ size: SIZE, classes: 10, seed: 3 });
  // Heavy enough that a run spans many event-loop turns (about 0.3 G multiply-adds).
  heavyPath = await writeTinyModel({ size: HEAVY, channels: 32, depth: 4, classes: 10, seed: 5 });
});

describe('InferenceEngine', () => {
  let engine: InferenceEngine;
  const { logger } = captureLogger();
  beforeAll(async () => {
    engine = await InferenceEngine.create(settings(), logger);
  });
  afterAll(async () => {
    await engine.close();
  });

  it('reports the chosen provider and the model input and output', () => {
    expect(engine.provider).toBe('cpu');
    expect(engine.attempts).toEqual([{ provider: 'cpu', ok: true }]);
    expect(engine.input).toEqual({ name: 'input', type: 'float32', dims });
    expect(engine.output).toMatchObject({ name: 'scores', type: 'float32', dims: [1, 10] });
  });

  it('gives the same scores as a main-thread session', async () => {
    const input = seededInput(SIZE, 11);
    const expected = await directScores(modelPath, input, dims);
    const out = await engine.run({ data: input.slice(), dims });
    expect(out.scores).toBeInstanceOf(Float32Array);
    expect(Array.from(out.scores)).toEqual(expected);
    expect(out.inferenceMs).toBeGreaterThanOrEqual(0);
  });

  it('transfers a whole-buffer tensor without copying, and copies a view into a larger buffer', async () => {
    const owned = seededInput(SIZE, 12);
    await engine.run({ data: owned, dims });
    expect(owned.byteLength).toBe(0); // detached: it moved to the worker
    expect(owned.buffer.byteLength).toBe(0); // a structured clone would leave the caller's copy in place

    const pool = new Float32Array(3 * SIZE * SIZE + 16);
    const view = pool.subarray(16);
    view.set(seededInput(SIZE, 12));
    const out = await engine.run({ data: view, dims });
    expect(pool.byteLength).toBeGreaterThan(0);
    expect(Array.from(out.scores)).toEqual(await directScores(modelPath, seededInput(SIZE, 12), dims));
  });

  it('hands the input array back after the run, unchanged, and a reused array gives the new frame its own scores', async () => {
    const first = seededInput(SIZE, 13);
    const out = await engine.run({ data: first.slice(), dims });
    expect(out.input).toBeInstanceOf(Float32Array);
    expect(Array.from(out.input!)).toEqual(Array.from(first));
    // The daemon preprocesses the next frame into the returned array: its scores are that frame's.
    out.input!.set(seededInput(SIZE, 14));
    const again = await engine.run({ data: out.input!, dims });
    expect(out.input!.byteLength).toBe(0); // moved to the worker again
    expect(Array.from(again.scores)).toEqual(await directScores(modelPath, seededInput(SIZE, 14), dims));
    expect(again.input!.length).toBe(first.length);
  });

  it('resolves sequential and concurrent runs in request order with their own scores', async () => {
    const inputs = [0, 1, 2, 3, 4, 5, 6].map((i) => seededInput(SIZE, 100 + i));
    const expected = await Promise.all(inputs.map((x) => directScores(modelPath, x, dims)));
    expect(Array.from((await engine.run({ data: inputs[0]!.slice(), dims })).scores)).toEqual(expected[0]);
    expect(Array.from((await engine.run({ data: inputs[1]!.slice(), dims })).scores)).toEqual(expected[1]);

    const order: number[] = [];
    const results = await Promise.all(
      inputs.slice(2).map((x, i) =>
        engine.run({ data: x.slice(), dims }).then((out) => {
          order.push(i);
          return Array.from(out.scores);
        }),
      ),
    );
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(results).toEqual(expected.slice(2));
  });

  it('runs the worker under small V8 heap limits and reports its heap on request', async () => {
    const heap = await engine.workerHeap();
    expect(heap).toBeDefined();
    expect(heap!.usedHeapSize).toBeGreaterThan(0);
    // The process default would be gigabytes; the worker's limits cap it near their sum.
    const MB = 2 ** 20;
    expect(heap!.heapSizeLimit).toBeLessThanOrEqual(
      (WORKER_LIMITS.maxOldGenerationSizeMb + WORKER_LIMITS.maxYoungGenerationSizeMb + 8) * MB,
    );
    expect(heap!.youngGenerationSize).toBeLessThanOrEqual(WORKER_LIMITS.maxYoungGenerationSizeMb * MB);
  });

  it('creates the session with the measured memory options', () => {
    const options = sessionOptionsFor(settings(), 'cpu');
    expect(options).toMatchObject({ enableCpuMemArena: true, enableMemPattern: true, executionMode: 'sequential' });
    // Prepacking stays on (disabling it cost 40 % of the rate for no memory saved).
    expect((options.extra as { session: Record<string, unknown> }).session.disable_prepacking).toBeUndefined();
  });

  it('rejects a tensor that does not fit the model input, and keeps working', async () => {
    await expect(engine.run({ data: new Float32Array(10), dims })).rejects.toBeInstanceOf(InvalidTensorError);
    await expect(engine.run({ data: new Float32Array(3 * 4 * 4), dims: [1, 3, 4, 4] })).rejects.toThrow(/do not fit/);
    await expect(engine.run({ data: seededInput(SIZE), dims })).resolves.toBeDefined();
  });
});

describe('execution provider selection', () => {
  it('skips a provider this build lacks, says why, and falls back to cpu', async () => {
    const { logger, records } = captureLogger();
    const engine = await InferenceEngine.create(settings({ executionProviders: ['QNN', 'cpu'] }), logger);
    try {
      expect(engine.provider).toBe('cpu');
      expect(engine.attempts).toEqual([
        { provider: 'qnn', ok: false, reason: 'not compiled into this onnxruntime-node build' },
        { provider: 'cpu', ok: true },
      ]);
      expect(records).toContainEqual(expect.objectContaining({ provider: 'qnn', reason: expect.stringMatching(/not compiled/) }));
    } finally {
      await engine.close();
    }
  });

  it('tries an accelerator in a child first: without a Vulkan driver WebGPU is skipped with the reason and its native lines', async (ctx) => {
    ctx.skip(!(await webGpuStatus()).compiled, SKIP.webgpuBuild);
    // The worker and its probe child inherit this environment: the Vulkan loader then finds no driver.
    const saved = { VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES, VK_DRIVER_FILES: process.env.VK_DRIVER_FILES };
    process.env.VK_ICD_FILENAMES = process.env.VK_DRIVER_FILES = '/nonexistent/icd.json';
    const { logger, records } = captureLogger();
    let engine: InferenceEngine | undefined;
    try {
      engine = await InferenceEngine.create(settings({ executionProviders: ['webgpu', 'cpu'] }), logger);
    } finally {
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
    try {
      expect(engine.provider).toBe('cpu');
      expect(engine.attempts[0]).toMatchObject({
        provider: 'webgpu',
        ok: false,
        reason: 'Failed to get a WebGPU adapter: No supported adapters',
      });
      // Dawn's own lines: with a Vulkan loader installed they name the driver file it could not read;
      // on a machine without one (a fresh one, before .ci/run installs Mesa) they say the loader is missing.
      const ldconfig = existsSync('/sbin/ldconfig') ? '/sbin/ldconfig' : 'ldconfig'; // not on a user's PATH on Debian
      const loaderInstalled = execFileSync(ldconfig, ['-p'], { encoding: 'utf8' }).includes('libvulkan.so.1');
      expect(engine.attempts[0]!.native?.join('\n')).toMatch(loaderInstalled ? /nonexistent\/icd\.json/ : /libvulkan\.so\.1/);
      // One warning says it all; the native lines ride along in it instead of on stderr.
      const warnings = records.filter((r) => r.level === 40);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({
        provider: 'webgpu',
        msg: expect.stringMatching(/^execution provider webgpu not used: Failed to get a WebGPU adapter/),
      });
    } finally {
      await engine.close();
    }
  });

  it('reports the node placement of the session: every node on the CPU for a CPU session', async () => {
    const engine = await InferenceEngine.create(settings(), captureLogger().logger);
    try {
      const placement = engine.info.placement!;
      expect(Object.keys(placement.nodes)).toEqual(['cpu']);
      expect(placement.nodes.cpu).toBeGreaterThan(0);
      expect(placement).toMatchObject({ cpuOps: {}, copies: 0 });
    } finally {
      await engine.close();
    }
  });

  it('leaves the CPU placement out when asked (the daemon), and still gives the same scores', async () => {
    const input = seededInput(SIZE, 21);
    const engine = await InferenceEngine.create(settings({ profileCpuPlacement: false }), captureLogger().logger);
    try {
      expect(engine.provider).toBe('cpu');
      expect(engine.info.placement).toBeUndefined();
      const out = await engine.run({ data: input.slice(), dims });
      expect(Array.from(out.scores)).toEqual(await directScores(modelPath, input, dims));
    } finally {
      await engine.close();
    }
  });

  it('fails clearly when no listed provider works and cpu is not listed', async () => {
    const err = await InferenceEngine.create(settings({ executionProviders: ['qnn'] }), captureLogger().logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoExecutionProviderError);
    expect((err as NoExecutionProviderError).attempts).toEqual([
      { provider: 'qnn', ok: false, reason: 'not compiled into this onnxruntime-node build' },
    ]);
    expect((err as Error).message).toMatch(/add "cpu"/);
  });

  it('reports a missing model file as a model error', async () => {
    const err = await InferenceEngine.create(settings({ modelPath: '/nonexistent/model.onnx' }), captureLogger().logger).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(/not found/);
  });

  it('reports an unknown input name with the names the model has', async () => {
    const err = await InferenceEngine.create(settings({ inputName: 'data_0' }), captureLogger().logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(/no input "data_0".*input/);
  });
});

describe('worker behaviour', () => {
  const heavyDims = [1, 3, HEAVY, HEAVY];
  const heavySettings = () => settings({ modelPath: heavyPath });

  it('keeps the main event loop turning while the worker infers', async () => {
    const engine = await InferenceEngine.create(heavySettings(), captureLogger().logger);
    try {
      let ticks = 0;
      let running = true;
      const spin = () => {
        ticks++;
        if (running) setImmediate(spin);
      };
      setImmediate(spin);
      // Several runs: on a loaded machine this thread may be descheduled for the whole of one run.
      for (let i = 0; i < 5; i++) await engine.run({ data: seededInput(HEAVY), dims: heavyDims });
      running = false;
      // A run on the main thread blocks it: only the turns between runs would happen.
      expect(ticks).toBeGreaterThan(10);
    } finally {
      await engine.close();
    }
  });

  it("names the worker's thread, and so ORT's intra-op threads, inference: their CPU is counted apart", async () => {
    const inferenceThreads = () => (readThreadTimes() ?? []).filter((t) => t.name === INFERENCE_THREAD_NAME).length;
    // The first load of ONNX Runtime in a process leaves one idle thread for the process's life (it has
    // the name too): load it once first, so the count below is the engine's own.
    await (await InferenceEngine.create(settings(), captureLogger().logger)).close();
    const before = inferenceThreads();
    const engine = await InferenceEngine.create(settings({ modelPath: heavyPath, threads: 2 }), captureLogger().logger);
    try {
      // The worker and ORT's second intra-op thread, which inherited the name the worker gave itself.
      expect(inferenceThreads() - before).toBeGreaterThanOrEqual(2);
      const meter = new ThreadCpuMeter();
      const start = meter.sample()!;
      // A run takes a few ms and /proc counts 10 ms ticks: run until the inference threads show 0.2 s.
      let end = start;
      for (let i = 0; i < 2000 && end.inference - start.inference < 0.2; i++) {
        await engine.run({ data: seededInput(HEAVY), dims: heavyDims });
        if (i % 10 === 9) end = meter.sample()!;
      }
      expect(end.inference - start.inference).toBeGreaterThanOrEqual(0.2);
      // This thread only posts the tensors and takes the scores: a small fraction of that.
      expect(end.main - start.main).toBeLessThan((end.inference - start.inference) / 2);
    } finally {
      await engine.close();
    }
    // The OS threads end just after terminate() resolves (Node joins the worker's thread afterwards): no
    // event says when, so poll briefly. None may stay: a restarted worker must not leave ORT threads behind.
    for (let i = 0; i < 100 && inferenceThreads() > before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(inferenceThreads()).toBe(before);
  });

  it('rejects pending runs when the worker dies, then restarts it on the next run', async () => {
    const { logger, records } = captureLogger();
    const engine = await InferenceEngine.create(heavySettings(), logger);
    try {
      const input = seededInput(HEAVY, 9);
      const before = Array.from((await engine.run({ data: input.slice(), dims: heavyDims })).scores);

      // The crash is queued first, so these two are still pending when the worker dies.
      const crashed = engine[crashWorkerForTest]();
      const inFlight = [engine.run({ data: input.slice(), dims: heavyDims }), engine.run({ data: input.slice(), dims: heavyDims })];
      expect(engine.pending).toBe(2);
      await crashed;
      for (const p of inFlight) {
        const err = await p.catch((e: unknown) => e);
        expect(err).toBeInstanceOf(WorkerCrashedError);
        expect((err as Error).message).toMatch(/simulated worker crash/);
      }
      expect(engine.pending).toBe(0);
      expect(records.some((r) => r.level === 50 && /worker died/.test(String(r.msg)))).toBe(true);

      const after = await engine.run({ data: input.slice(), dims: heavyDims });
      expect(Array.from(after.scores)).toEqual(before);
      expect(engine.restarts).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('stops restarting a worker that keeps dying', async () => {
    const engine = await InferenceEngine.create(settings(), captureLogger().logger, { maxRestarts: 1, restartWindowMs: 60_000 });
    try {
      await engine[crashWorkerForTest]();
      await expect(engine.run({ data: seededInput(SIZE), dims })).resolves.toBeDefined();
      await engine[crashWorkerForTest]();
      await expect(engine.run({ data: seededInput(SIZE), dims })).rejects.toBeInstanceOf(RestartLimitError);
      expect(engine.restarts).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('finishes queued runs on close, then refuses new ones', async () => {
    const engine = await InferenceEngine.create(settings(), captureLogger().logger);
    const queued = [1, 2, 3].map((i) => engine.run({ data: seededInput(SIZE, i), dims }));
    await engine.close();
    for (const p of queued) await expect(p).resolves.toHaveProperty('scores');
    await expect(engine.run({ data: seededInput(SIZE), dims })).rejects.toBeInstanceOf(EngineClosedError);
    await engine.close(); // idempotent
  });

  it('caches the optimized model and starts from it next time with the same scores', async () => {
    const cacheDir = await mkdtemp(path.join(tmpdir(), 'inceptiond-cache-'));
    const input = seededInput(SIZE, 21);
    const first = await InferenceEngine.create(settings({ optimizedModelCacheDir: cacheDir }), captureLogger().logger);
    const a = Array.from((await first.run({ data: input.slice(), dims })).scores);
    await first.close();
    expect(first.info.fromCache).toBe(false);
    const files = await readdir(cacheDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/-cpu-all\.onnx$/);

    const second = await InferenceEngine.create(settings({ optimizedModelCacheDir: cacheDir }), captureLogger().logger);
    try {
      expect(second.info.fromCache).toBe(true);
      const b = Array.from((await second.run({ data: input.slice(), dims })).scores);
      for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 6);
    } finally {
      await second.close();
    }
  });

  it('runs without the optimized-model cache when its folder cannot be made', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'inceptiond-cache-'));
    const notAFolder = path.join(dir, 'ort');
    await writeFile(notAFolder, 'a file where the cache folder should be'); // root ignores permissions; this it cannot
    const engine = await InferenceEngine.create(settings({ optimizedModelCacheDir: notAFolder }), captureLogger().logger);
    try {
      expect(engine.provider).toBe('cpu');
      expect(engine.info.fromCache).toBe(false);
      const { scores } = await engine.run({ data: seededInput(SIZE, 4), dims });
      expect(scores).toHaveLength(10);
    } finally {
      await engine.close();
    }
    expect(await readFile(notAFolder, 'utf8')).toMatch(/^a file/);
  });

  it('saves the same optimized graph from a session made only to optimize (no arena, no prepacking) as from a running one', async () => {
    const ort = await import('onnxruntime-node');
    const dir = await mkdtemp(path.join(tmpdir(), 'inceptiond-optimize-only-'));
    const saved: Buffer[] = [];
    for (const optimizeOnly of [false, true]) {
      const file = path.join(dir, `${optimizeOnly}.onnx`);
      const options = sessionOptionsFor(testSessionSettings(heavyPath), 'cpu', { optimizedModelFilePath: file, optimizeOnly });
      expect(options.enableCpuMemArena).toBe(!optimizeOnly);
      await (await ort.InferenceSession.create(heavyPath, options)).release();
      saved.push(await readFile(file));
    }
    expect(saved[0]!.length).toBeGreaterThan(0);
    expect(saved[1]!.equals(saved[0]!)).toBe(true);
  });

  it(`keeps the ${KEEP_OPTIMIZED_MODELS} last used optimized models in the cache folder, and leaves other files alone`, async () => {
    const cacheDir = await mkdtemp(path.join(tmpdir(), 'inceptiond-cache-'));
    // Five left by other models, variants or runtime versions, used on five different days of 2020.
    const old = [1, 2, 3, 4, 5].map((day) => `other-${day}-0123456789abcdef-ort1.2.3-abcd1234-cpu-all.onnx`);
    for (const [i, name] of old.entries()) {
      await writeFile(path.join(cacheDir, name), 'optimized');
      await utimes(path.join(cacheDir, name), new Date(2020, 0, 1 + i), new Date(2020, 0, 1 + i));
    }
    await writeFile(path.join(cacheDir, 'model-qnn-0123_ctx.onnx'), 'context');
    const engine = await InferenceEngine.create(settings({ optimizedModelCacheDir: cacheDir }), captureLogger().logger);
    await engine.close();
    expect(engine.info.fromCache).toBe(false);
    const files = (await readdir(cacheDir)).sort();
    const written = files.filter((f) => !f.startsWith('other-') && f.endsWith('-cpu-all.onnx'));
    expect(written).toHaveLength(1);
    // The new one and the most recently used of the others: days 5, 4 and 3.
    expect(files.filter((f) => f.startsWith('other-'))).toEqual(old.slice(5 - (KEEP_OPTIMIZED_MODELS - 1)));
    expect(files).toContain('model-qnn-0123_ctx.onnx');
  });
});
