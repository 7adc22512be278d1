// prepareModel and model.precision: the built model quantized once and cached, reuse of the cache,
// a half-written cache entry never trusted, configured FP32/INT8 models under auto/fp32/int8.
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, projectRoot, type Config } from '../../src/config/index.js';
import {
  KEEP_INT8_VARIANTS,
  ModelSetupError,
  calibrationPathFor,
  prepareModel,
  quantizationTargetFor,
} from '../../src/daemon/model-setup.js';
import { loadModel, saveModel, writeManifestBeside, type ModelManifest } from '../../src/model/index.js';
import { createLogger } from '../../src/ops/index.js';
import { buildSmallCnn, SMALL_INPUT, SMALL_SIZE, writeImages } from './quantize-fixtures.js';

let dir: string;
let imagesDir: string;

/** Writes the config file, then loads it. */
async function config(overrides: Record<string, unknown>, name: string): Promise<Config> {
  const file = path.join(dir, `${name}.json`);
  await writeFile(file, JSON.stringify(overrides));
  return loadConfig({ file, env: {} }).config;
}

function captureLogger(): { logger: ReturnType<typeof createLogger>; messages: () => string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level: 'info', name: 'test', destination: { write: (s: string) => void lines.push(s) } });
  return { logger, messages: () => lines.map((l) => (JSON.parse(l) as { msg: string }).msg) };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'model-setup-'));
  imagesDir = path.join(dir, 'frames');
  await mkdir(imagesDir);
  // Three of the bundled samples: enough to calibrate, few enough to keep the file fast.
  const samples = (await readdir(path.join(projectRoot, 'models', 'samples'))).filter((f) => f.endsWith('.jpg')).sort();
  for (const f of samples.slice(0, 3)) await copyFile(path.join(projectRoot, 'models', 'samples', f), path.join(imagesDir, f));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('prepareModel with no model configured (the built Inception V2)', () => {
  // One state dir for the whole block: the first test builds and quantizes, the next ones reuse.
  let base: Record<string, unknown>;
  let first: Awaited<ReturnType<typeof prepareModel>>;

  beforeAll(() => {
    base = { stateDir: path.join(dir, 'state'), capture: { backend: 'files', files: { path: imagesDir } } };
  });

  it('auto quantizes the built model once into model.cacheDir and runs it as INT8', async () => {
    const cfg = await config(base, 'auto');
    const { logger, messages } = captureLogger();
    const statuses: string[] = [];
    first = await prepareModel(cfg, logger, { onStatus: (st) => statuses.push(st) });
    expect(statuses).toEqual(['building the Inception V2 model (once)', 'quantizing inception-v2-built.onnx to INT8 (once)']);
    expect(first.precision).toBe('int8');
    expect(first.synthetic).toBe(true);
    expect(path.dirname(first.modelPath)).toBe(cfg.model.cacheDir);
    expect(path.basename(first.modelPath)).toMatch(/^inception-v2-built\.int8-[0-9a-f]{12}-percentile-cpu-[0-9a-f]{8}\.onnx$/);
    const manifest = JSON.parse(await readFile(`${first.modelPath}.json`, 'utf8')) as ModelManifest;
    expect(manifest.precision).toBe('int8');
    expect(manifest.file).toBe(path.basename(first.modelPath));
    expect(first.labels).toHaveLength(1000);
    expect(messages().some((m) => /^quantizing inception-v2-built\.onnx to INT8 \(percentile calibration on 3 images\)/.test(m))).toBe(
      true,
    );
    expect(messages().some((m) => /^INT8 model ready in [\d.]+ s/.test(m))).toBe(true);
    // No temp files left beside it.
    expect((await readdir(cfg.model.cacheDir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('a second start reuses the cached INT8 model without quantizing again', async () => {
    const cfg = await config(base, 'auto2');
    const before = await stat(first.modelPath);
    const { logger, messages } = captureLogger();
    const statuses: string[] = [];
    const again = await prepareModel(cfg, logger, { onStatus: (st) => statuses.push(st) });
    expect(statuses).toEqual([]);
    expect(again.modelPath).toBe(first.modelPath);
    expect(again.precision).toBe('int8');
    const after = await stat(first.modelPath);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(messages()).toContain('using cached INT8 model');
    expect(messages().some((m) => m.startsWith('quantizing'))).toBe(false);
  });

  it('a cached model without its manifest (interrupted run) is not trusted: it is quantized again', async () => {
    const cfg = await config(base, 'auto3');
    await rm(`${first.modelPath}.json`);
    await writeFile(first.modelPath, 'half a model');
    // A temp file an interrupted writer left behind (pid 4194305 is above Linux's largest pid_max, so never alive).
    const stale = path.join(cfg.model.cacheDir, `.${path.basename(first.modelPath)}.4194305.1700000000000.tmp`);
    await writeFile(stale, 'partial');
    const { logger, messages } = captureLogger();
    const redone = await prepareModel(cfg, logger);
    expect(redone.modelPath).toBe(first.modelPath);
    expect(messages().some((m) => m.startsWith('quantizing'))).toBe(true);
    expect((await loadModel(redone.modelPath)).graph?.node?.some((n) => n.opType === 'QuantizeLinear')).toBe(true);
    await expect(stat(stale)).rejects.toThrow();
  });

  it('a different calibration method gives a different cache file', async () => {
    const cfg = await config({ ...base, model: { calibration: { method: 'minmax' } } }, 'minmax');
    const { logger } = captureLogger();
    const m = await prepareModel(cfg, logger);
    expect(m.precision).toBe('int8');
    expect(path.basename(m.modelPath)).toMatch(/-minmax-cpu-/);
    expect(m.modelPath).not.toBe(first.modelPath);
  });

  it('quantizes for the first execution provider (qnn → qnn-htp), cached apart from the CPU model', async () => {
    const cfg = await config({ ...base, inference: { executionProviders: ['qnn', 'cpu'] } }, 'qnn');
    expect(quantizationTargetFor(cfg)).toBe('qnn-htp');
    const m = await prepareModel(cfg, captureLogger().logger);
    expect(path.basename(m.modelPath)).toMatch(/-percentile-qnn-htp-/);
    const manifest = JSON.parse(await readFile(`${m.modelPath}.json`, 'utf8')) as {
      quantization: { target: string; quantizeSoftmax: boolean };
    };
    expect(manifest.quantization).toMatchObject({ target: 'qnn-htp', quantizeSoftmax: true });
    // and a chosen target wins over the provider's
    expect(
      quantizationTargetFor(
        await config({ ...base, inference: { executionProviders: ['qnn'] }, model: { quantizationTarget: 'cpu' } }, 'qnn-cpu'),
      ),
    ).toBe('cpu');
    expect(quantizationTargetFor(await config({ ...base, inference: { executionProviders: ['webgpu', 'cpu'] } }, 'gpu'))).toBe('cpu');
  });

  it('fp32 with an INT8 model is refused with ModelSetupError', async () => {
    const cfg = await config({ ...base, model: { path: first.modelPath, precision: 'fp32' } }, 'fp32-int8');
    const { logger } = captureLogger();
    const err = await prepareModel(cfg, logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelSetupError);
    expect((err as Error).message).toMatch(/model\.precision is fp32 but .* is an INT8 model/);
  });

  it('auto with a configured INT8 model runs it as is', async () => {
    const cfg = await config({ ...base, model: { path: first.modelPath } }, 'auto-int8');
    const { logger, messages } = captureLogger();
    const m = await prepareModel(cfg, logger);
    expect(m.modelPath).toBe(first.modelPath);
    expect(m.precision).toBe('int8');
    expect(messages().some((x) => x.startsWith('quantizing') || x === 'using cached INT8 model')).toBe(false);
  });

  it(`keeps the ${KEEP_INT8_VARIANTS} last used INT8 variants and none made from an earlier version of the model`, async () => {
    const cacheDir = path.dirname(first.modelPath);
    const name = path.basename(first.modelPath);
    const [stem, rest] = name.split('.int8-') as [string, string];
    const source = rest.slice(0, 12);
    // Two variants last used long ago, and one made from an earlier version of the model.
    const unused = [`${stem}.int8-${source}-entropy-cpu-0000000a.onnx`, `${stem}.int8-${source}-entropy-cpu-0000000b.onnx`];
    const earlier = `${stem}.int8-000000000000-percentile-cpu-0000000c.onnx`;
    for (const [i, file] of [...unused, earlier].entries()) {
      await writeFile(path.join(cacheDir, file), 'model');
      await writeFile(path.join(cacheDir, `${file}.json`), '{}');
      await utimes(path.join(cacheDir, `${file}.json`), new Date(2020, 0, 1 + i), new Date(2020, 0, 1 + i));
    }
    const int8Files = async () => (await readdir(cacheDir)).filter((f) => f.includes('.int8-')).sort();
    expect((await int8Files()).filter((f) => f.endsWith('.onnx')).length).toBeGreaterThan(KEEP_INT8_VARIANTS);
    // Starting on the first variant again makes it the most recently used one.
    await prepareModel(await config(base, 'reuse'), captureLogger().logger);
    const made = await prepareModel(
      await config({ ...base, model: { calibration: { method: 'entropy' } } }, 'entropy'),
      captureLogger().logger,
    );

    const models = (await int8Files()).filter((f) => f.endsWith('.onnx'));
    expect(models).toHaveLength(KEEP_INT8_VARIANTS);
    expect(models).toContain(path.basename(made.modelPath));
    expect(models).toContain(name);
    for (const file of [...unused, earlier]) expect(models).not.toContain(file);
    // Each kept model keeps its manifest; a removed one leaves none behind.
    expect((await int8Files()).filter((f) => f.endsWith('.json'))).toEqual(models.map((f) => `${f}.json`));
  });
});

describe('prepareModel with a configured FP32 model', () => {
  let fp32: string;
  const manifest: ModelManifest = {
    name: 'small-cnn',
    file: 'small.onnx',
    input: {
      name: SMALL_INPUT,
      layout: 'NCHW',
      width: SMALL_SIZE,
      height: SMALL_SIZE,
      channels: 'RGB',
      scale: 1,
      mean: [0, 0, 0],
      std: [1, 1, 1],
      resize: 'fill',
    },
    output: { name: 'prob', activation: 'softmax' },
  };

  beforeAll(async () => {
    fp32 = path.join(dir, 'small', 'small.onnx');
    await mkdir(path.dirname(fp32), { recursive: true });
    await saveModel(buildSmallCnn({ seed: 4 }), fp32);
    await writeManifestBeside(fp32, manifest);
  });

  it('auto runs it as FP32 and says how to quantize it', async () => {
    const cfg = await config({ stateDir: path.join(dir, 'state-small'), model: { path: fp32 } }, 'small-auto');
    const { logger, messages } = captureLogger();
    const m = await prepareModel(cfg, logger);
    expect(m.precision).toBe('fp32');
    expect(m.modelPath).toBe(fp32);
    const hint = messages().find((x) => x.includes('inceptiond model quantize'));
    expect(hint).toContain('--from-source 64');
    expect(hint).toContain(fp32);
  });

  it('int8 quantizes it at startup (calibrating on model.calibration.path) and caches it', async () => {
    const cal = path.join(dir, 'small-cal');
    await mkdir(cal);
    await writeImages(cal, 3, 9, 48);
    const cfg = await config(
      {
        stateDir: path.join(dir, 'state-small'),
        capture: { backend: 'webcam' },
        model: { path: fp32, precision: 'int8', calibration: { path: cal } },
      },
      'small-int8',
    );
    const { logger, messages } = captureLogger();
    const m = await prepareModel(cfg, logger);
    expect(m.precision).toBe('int8');
    expect(path.basename(m.modelPath)).toMatch(/^small\.int8-[0-9a-f]{12}-percentile-cpu-[0-9a-f]{8}\.onnx$/);
    expect(path.dirname(m.modelPath)).toBe(cfg.model.cacheDir);
    expect(messages().some((x) => x.startsWith('quantizing small.onnx to INT8 (percentile calibration on 3 images)'))).toBe(true);
    const again = captureLogger();
    expect((await prepareModel(cfg, again.logger)).modelPath).toBe(m.modelPath);
    expect(again.messages()).toContain('using cached INT8 model');
  });

  it('an empty calibration folder is a ModelSetupError naming the folder', async () => {
    const empty = path.join(dir, 'no-images');
    await mkdir(empty);
    const cfg = await config(
      { stateDir: path.join(dir, 'state-empty'), model: { path: fp32, precision: 'int8', calibration: { path: empty } } },
      'small-empty',
    );
    const { logger } = captureLogger();
    const err = await prepareModel(cfg, logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelSetupError);
    expect((err as Error).message).toContain(empty);
    expect((err as Error).message).toMatch(/has no images/);
  });
});

describe('calibrationPathFor', () => {
  it('is model.calibration.path when set, else the files source path, else the bundled samples', async () => {
    const explicit = await config(
      { model: { calibration: { path: '/data/cal/*.jpg' } }, capture: { backend: 'files', files: { path: '/x' } } },
      'c1',
    );
    expect(calibrationPathFor(explicit)).toBe('/data/cal/*.jpg');
    const files = await config({ capture: { backend: 'files', files: { path: '/frames' } } }, 'c2');
    expect(calibrationPathFor(files)).toBe('/frames');
    const webcam = await config({ capture: { backend: 'webcam' } }, 'c3');
    expect(calibrationPathFor(webcam)).toBe(path.join(projectRoot, 'models', 'samples'));
  });
});
