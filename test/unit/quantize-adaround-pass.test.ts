// AdaRound wired into quantizeModel (adaround-pass.ts), end to end on the trained tiny CNN: every figure
// is on held-out images never trained or calibrated on, with the same method and ranges with and
// without AdaRound, so the difference is the rounding alone.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type onnx } from '../../src/model/onnx.js';
import { quantizeModel, type QuantizeOptions, type QuantizeReport } from '../../src/model/quantize/index.js';
import { trainedTinyCnn, type TrainedTinyCnn } from '../helpers/trained-tiny-cnn.js';

let net: TrainedTinyCnn;
let dir: string;

async function* each(xs: Float32Array[]): AsyncGenerator<Float32Array> {
  for (const x of xs) yield x;
}

/** Few steps keep the test short; the trained layers are small, so this already moves the figure. */
const ITERATIONS = 300;

async function quantize(name: string, extra: Partial<QuantizeOptions>): Promise<QuantizeReport> {
  return quantizeModel({
    input: net.modelPath,
    output: path.join(dir, `${name}.onnx`),
    calibration: { images: each(net.calibration.tensors) },
    evaluation: { images: each(net.eval.tensors) },
    method: 'minmax',
    ...extra,
  });
}

/** Integer weights (INT8 initializers named …_quantized, biases excluded) and their scales, by name. */
function quantizedWeights(model: onnx.IModelProto): Map<string, { values: Int8Array; scale: Float32Array }> {
  const inits = new Map((model.graph?.initializer ?? []).map((t) => [t.name!, t]));
  const out = new Map<string, { values: Int8Array; scale: Float32Array }>();
  for (const n of model.graph?.node ?? []) {
    if (n.opType !== 'DequantizeLinear') continue;
    const q = inits.get(n.input![0]!);
    if (q?.dataType !== 3) continue; // INT8
    const raw = q.rawData!;
    const s = inits.get(n.input![1]!)!.rawData!;
    out.set(q.name!, {
      values: new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength),
      scale: new Float32Array(Uint8Array.from(s).buffer),
    });
  }
  return out;
}

let plain: QuantizeReport;
let rounded: QuantizeReport;

beforeAll(async () => {
  net = await trainedTinyCnn();
  dir = await mkdtemp(path.join(os.tmpdir(), 'quantize-adaround-pass-'));
  plain = await quantize('plain', {});
  rounded = await quantize('adaround', { adaround: { iterations: ITERATIONS, images: 16 } });
}, 180_000);
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('quantizeModel with adaround on the trained tiny CNN', () => {
  it('raises the held-out logits SQNR over round-to-nearest with the same ranges', () => {
    expect(rounded.tensors).toEqual(plain.tensors);
    expect(plain.adaround).toBeUndefined();
    expect(rounded.heldOut!.tensor).toBe('logits');
    expect(rounded.heldOut!.sqnrDb!).toBeGreaterThan(plain.heldOut!.sqnrDb! + 0.5);
  });

  it('reports every layer, each reconstructed at least as well as with round-to-nearest', () => {
    const a = rounded.adaround!;
    // its Conv/Gemm layers and the avg pool's depthwise conv
    expect(a).toMatchObject({ layers: 8, iterations: ITERATIONS, images: 16 });
    expect(a.passes).toBeGreaterThan(1);
    expect(a.peakMemory).toBeGreaterThan(0);
    expect(a.perLayer).toHaveLength(8);
    for (const l of a.perLayer) expect(l.finalMse).toBeLessThanOrEqual(l.initialMse);
    expect(a.perLayer.some((l) => l.finalMse < 0.9 * l.initialMse)).toBe(true);
  });

  it('changes the emitted weights only by one step (floor instead of ceil or back), with the same scales', async () => {
    const a = quantizedWeights(await loadModel(plain.output));
    const b = quantizedWeights(await loadModel(rounded.output));
    expect(a.size).toBe(8);
    expect([...b.keys()]).toEqual([...a.keys()]);
    let changed = 0;
    let far = 0;
    for (const [name, w] of a) {
      const v = b.get(name)!;
      expect(v.scale).toEqual(w.scale);
      for (let i = 0; i < w.values.length; i++) {
        const d = Math.abs(v.values[i]! - w.values[i]!);
        if (d === 1) changed++;
        if (d > 1) far++;
      }
    }
    expect(far).toBe(0);
    expect(changed).toBe(rounded.adaround!.perLayer.reduce((s, l) => s + l.changed, 0));
    expect(changed).toBeGreaterThan(0);
  });

  it('writes a model ORT runs fused, as the daemon does', async () => {
    const session = await ort.InferenceSession.create(rounded.output, { graphOptimizationLevel: 'all' });
    try {
      const out = await session.run({ input: new ort.Tensor('float32', net.eval.tensors[0]!, net.inputDims) });
      const scores = Object.values(out)[0]!.data as Float32Array;
      expect(scores.length).toBe(10);
      expect(scores.every(Number.isFinite)).toBe(true);
    } finally {
      await session.release();
    }
  });

  it('with bias correction after it: runs, and stays better than round-to-nearest without either', async () => {
    const both = await quantize('adaround-bc', { adaround: { iterations: ITERATIONS, images: 16 }, biasCorrection: { images: 32 } });
    expect(both.adaround!.layers).toBe(8);
    expect(both.biasCorrection).toMatchObject({ layers: 8, inputs: 32, saturated: 0 });
    expect(both.heldOut!.sqnrDb!).toBeGreaterThan(plain.heldOut!.sqnrDb! + 0.5);
  }, 120_000);
});
