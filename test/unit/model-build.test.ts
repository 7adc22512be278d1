import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { buildInceptionV2Detailed, builtInputSpec, generateImages, writeBuiltModel } from '../../src/model/build.js';
import { formatModelInfo, inspectModel } from '../../src/model/inspect.js';
import { loadLabels, loadManifest } from '../../src/model/manifest.js';
import { encodeModel, loadModel, opsetVersion, type onnx } from '../../src/model/onnx.js';

async function classify(session: ort.InferenceSession, image: Float32Array, size: number): Promise<Float32Array> {
  const r = await session.run({ data_0: new ort.Tensor('float32', image, [1, 3, size, size]) });
  expect(r.prob_1!.dims).toEqual([1, 1000]);
  return r.prob_1!.data as Float32Array;
}

function argmax(p: Float32Array): number {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
  return best;
}

describe('built BN-Inception (default variant)', () => {
  let dir: string;
  let written: Awaited<ReturnType<typeof writeBuiltModel>>;
  let built: onnx.ModelProto;
  let session: ort.InferenceSession;
  // One build shared by the tests: building runs the calibration convolutions (seconds on 2 cores).
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'model-build-'));
    written = await writeBuiltModel(path.join(dir, 'inception-v2.built.onnx'), { seed: 1 });
    built = await loadModel(written.modelPath);
    session = await ort.InferenceSession.create(written.modelPath);
    return () => session.release();
  }, 120_000);

  it('has the published size and Conv → BatchNormalization → Relu units', () => {
    expect(written.params).toBeGreaterThan(10e6);
    expect(written.params).toBeLessThan(12.5e6);
    expect(written.macs).toBeGreaterThan(1.8e9);
    expect(written.macs).toBeLessThan(2.3e9);
    expect(opsetVersion(built)).toBe(13);
    const nodes = built.graph!.node!;
    const convs = nodes.filter((n) => n.opType === 'Conv');
    expect(convs.length).toBeGreaterThan(50);
    for (const c of convs) {
      const bn = nodes.find((n) => n.input![0] === c.output![0]);
      expect(bn?.opType).toBe('BatchNormalization');
      expect(nodes.find((n) => n.input![0] === bn!.output![0])?.opType).toBe('Relu');
    }
    expect(nodes.find((n) => n.output![0] === 'prob_1')?.opType).toBe('Softmax');
  });

  it('accepts [1,3,224,224] and returns probabilities that depend on the image', async () => {
    const spec = builtInputSpec('bn-inception');
    const outputs: Float32Array[] = [];
    for (const seed of [100, 101, 102, 103, 104, 105]) {
      outputs.push(await classify(session, generateImages(seed, 1, 224, spec), 224));
    }
    const top = outputs.map((p) => p[argmax(p)]!).sort((x, y) => x - y);
    for (const p of outputs) {
      expect(p.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 4);
      expect(Math.min(...p)).toBeGreaterThanOrEqual(0);
      expect(p[argmax(p)]!).toBeGreaterThan(5 / 1000); // not uniform
    }
    // Not one-hot: high-contrast images may be confident, typical ones are not.
    expect(top[Math.floor(top.length / 2)]!).toBeLessThan(0.99);
    expect(top.at(-1)!).toBeLessThan(0.9999);
    expect(new Set(outputs.map(argmax)).size).toBeGreaterThanOrEqual(4);
  });

  it('writes a manifest beside the model that marks it synthetic', async () => {
    expect(written.manifestPath).toBe(`${written.modelPath}.json`);
    const m = await loadManifest(written.manifestPath);
    expect(m.synthetic).toBe(true);
    expect(m.notes).toMatch(/meaningless/);
    expect(m.input).toMatchObject({ name: 'data_0', width: 224, height: 224 });
    expect(await loadLabels(m, dir)).toHaveLength(1000);
  });

  it('is described by inspect', async () => {
    const info = await inspectModel(written.modelPath);
    expect(info.inputs).toEqual([{ name: 'data_0', type: 'float', shape: [1, 3, 224, 224] }]);
    expect(info.outputs).toEqual([{ name: 'prob_1', type: 'float', shape: [1, 1000] }]);
    expect(info.precision).toBe('fp32');
    expect(info.parameters).toBe(written.params);
    expect(info.ops.Conv).toBe(info.ops.BatchNormalization);
    expect(info.opsets).toEqual([{ domain: 'ai.onnx', version: 13 }]);
    const text = formatModelInfo(info);
    expect(text).toContain('data_0  float[1, 3, 224, 224]');
    expect(text).toMatch(/\d+\s+Conv/);
  });

  it('rejects bad options clearly', async () => {
    await expect(buildInceptionV2Detailed({ seed: -1 })).rejects.toThrow(/seed must be an integer/);
    await expect(buildInceptionV2Detailed({ variant: 'v4' as never })).rejects.toThrow(/unknown Inception variant "v4"/);
  });
});

describe('rethinking-v2 variant', () => {
  it('takes 299×299 input and has the Table-1 size', async () => {
    const built = await buildInceptionV2Detailed({ variant: 'rethinking-v2', seed: 1 });
    expect(built.params).toBeGreaterThan(20e6);
    expect(built.params).toBeLessThan(30e6);
    const session = await ort.InferenceSession.create(encodeModel(built.model));
    try {
      expect(session.inputNames).toEqual(['data_0']);
      const p = await classify(session, generateImages(5, 1, 299, builtInputSpec('rethinking-v2')), 299);
      expect(p.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 4);
    } finally {
      await session.release();
    }
  }, 90_000);
});
