import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionOptionsFor } from '../../src/inference/session-options.js';
import { evaluateModels } from '../../src/model/eval.js';
import { DataType, makeTensor, saveModel, tensorToFloat32 } from '../../src/model/onnx.js';
import { createPreprocessor } from '../../src/vision/index.js';
import { buildSmallCnn, lcg, SMALL_SIZE, writeImages } from './quantize-fixtures.js';

let dir: string;
let ref: string;
let images: string[];
const pre = createPreprocessor({
  name: 'image',
  layout: 'NCHW',
  width: SMALL_SIZE,
  height: SMALL_SIZE,
  channels: 'RGB',
  scale: 1,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  resize: 'fill',
});
const preprocess = async (b: Buffer): Promise<Float32Array> => (await pre(b)).tensor.data;
// The daemon's options for its defaults (2 threads, no spinning, optimization 'all', cpu).
const sessionOptions = sessionOptionsFor(
  { modelPath: '', executionProviders: ['cpu'], threads: 2, allowSpinning: false, graphOptimizationLevel: 'all' },
  'cpu',
);

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'eval-'));
  ref = path.join(dir, 'ref.onnx');
  await saveModel(buildSmallCnn({ seed: 8 }), ref);
  await mkdir(path.join(dir, 'img'));
  images = await writeImages(path.join(dir, 'img'), 6, 3, 48);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('evaluateModels', () => {
  it('two identical models agree fully with infinite SQNR', async () => {
    const r = await evaluateModels({ ref, cand: ref, images, preprocess, sessionOptions, repeats: 2 });
    expect(Object.keys(r).sort()).toEqual(['candMs', 'images', 'latencyRatio', 'refMs', 'sqnrDb', 'top1Agreement', 'top5Agreement']);
    expect(r.images).toBe(6);
    expect(r.top1Agreement).toBe(1);
    expect(r.top5Agreement).toBe(1);
    expect(r.sqnrDb).toBe(Infinity);
    expect(r.refMs).toBeGreaterThan(0);
    expect(r.candMs).toBeGreaterThan(0);
    expect(r.latencyRatio).toBeCloseTo(r.candMs / r.refMs, 10);
  });

  it('a perturbed copy gives finite SQNR and agreements within [0, 1], top-5 ≥ top-1', async () => {
    const m = buildSmallCnn({ seed: 8 });
    const inits = m.graph!.initializer!;
    const fc = inits.findIndex((t) => t.name === 'fc_w');
    const w = tensorToFloat32(inits[fc]!);
    const rnd = lcg(77);
    const noisy = w.map((v) => v + (rnd() - 0.5) * 0.6);
    inits[fc] = makeTensor('fc_w', DataType.FLOAT, [10, 8], noisy);
    const cand = path.join(dir, 'cand.onnx');
    await saveModel(m, cand);
    const r = await evaluateModels({ ref, cand, images, preprocess, sessionOptions, repeats: 1 });
    expect(Number.isFinite(r.sqnrDb)).toBe(true);
    expect(r.sqnrDb).toBeGreaterThan(0);
    expect(r.sqnrDb).toBeLessThan(60);
    for (const a of [r.top1Agreement, r.top5Agreement]) {
      expect(a).toBeGreaterThanOrEqual(0);
      expect(a).toBeLessThanOrEqual(1);
    }
    expect(r.top5Agreement).toBeGreaterThanOrEqual(r.top1Agreement);
  });

  it('names a model that cannot be loaded and an image that cannot be decoded', async () => {
    const bogus = path.join(dir, 'bogus.onnx');
    await writeFile(bogus, 'nope');
    await expect(evaluateModels({ ref, cand: bogus, images, preprocess, sessionOptions })).rejects.toThrow(
      /cannot load model .*bogus\.onnx/,
    );
    const broken = path.join(dir, 'broken.jpg');
    await writeFile(broken, Buffer.from([0xff, 0xd8, 0x00]));
    await expect(evaluateModels({ ref, cand: ref, images: [broken], preprocess, sessionOptions })).rejects.toThrow(
      /cannot use image .*broken\.jpg/,
    );
    await expect(evaluateModels({ ref, cand: ref, images: [], preprocess, sessionOptions })).rejects.toThrow(/no images/);
  });
});
