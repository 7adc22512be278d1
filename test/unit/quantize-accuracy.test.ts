// Accuracy of the quantizer on a trained network (the tiny CNN the project trains, small version):
// what the MSE range search optimizes, sequential bias correction end to end, and the held-out report.
// Every figure is computed, deterministically, on held-out images never trained or calibrated on.
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quantizeCommand } from '../../src/commands/quantize-action.js';
import type { Config } from '../../src/config/index.js';
import { loadModel, saveModel } from '../../src/model/onnx.js';
import { buildSmallCnn, smallInputs } from './quantize-fixtures.js';
import { calibrate, createSession, probeTensors, quantGridOf, withExtraOutputs } from '../../src/model/quantize/calibrate.js';
import { addChannelErrors } from '../../src/model/quantize/bias-correction.js';
import { createProbeSession, describeLayers, layerInputsAndFloatOutputs } from '../../src/model/quantize/layer-io.js';
import { prepareModel } from '../../src/model/quantize/prepare.js';
import { emitQdq, planQdq } from '../../src/model/quantize/qdq.js';
import {
  expectedSquaredError,
  mseRange,
  percentileRange,
  AbsHistogram,
  SignedHistogram,
  squaredErrorIntegral,
} from '../../src/model/quantize/histogram.js';
import { quantizeModel, type CalibrationMethod, type QuantizeReport } from '../../src/model/quantize/index.js';
import { activationParams, quantizeValue, quantRange, sqnrDb } from '../../src/model/quantize/numeric.js';
import { mulberry32 } from '../../src/util/index.js';
import { createSilentLogger } from '../../src/ops/index.js';
import { trainedTinyCnn, type TrainedTinyCnn } from '../helpers/trained-tiny-cnn.js';

let net: TrainedTinyCnn;
let dir: string;

async function* each(xs: Float32Array[]): AsyncGenerator<Float32Array> {
  for (const x of xs) yield x;
}

/** Quantizes the trained network on its calibration set and compares on its held-out set. */
async function quantize(method: CalibrationMethod, biasCorrection = false): Promise<QuantizeReport> {
  return quantizeModel({
    input: net.modelPath,
    output: path.join(dir, `${method}${biasCorrection ? '-bc' : ''}.onnx`),
    calibration: { images: each(net.calibration.tensors) },
    evaluation: { images: each(net.eval.tensors) },
    method,
    biasCorrection: biasCorrection ? { images: 32 } : false,
  });
}

beforeAll(async () => {
  net = await trainedTinyCnn();
  dir = await mkdtemp(path.join(os.tmpdir(), 'quantize-accuracy-'));
}, 180_000);
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Measured squared error of quantizing `values` with the range's grid (what QuantizeLinear/DequantizeLinear do). */
function measuredError(values: Float32Array, range: { min: number; max: number }): number {
  const p = activationParams(range, 'uint8');
  const { qmin, qmax } = quantRange('uint8');
  let sum = 0;
  for (const v of values) {
    const d = v - (quantizeValue(v, p.scale, p.zeroPoint, qmin, qmax) - p.zeroPoint) * p.scale;
    sum += d * d;
  }
  return sum / values.length;
}

describe('MSE range search (histogram)', () => {
  it('integrates the clip + round error exactly (against a fine Riemann sum)', () => {
    const grid = { lo: -0.5, step: 0.25, levels: 9 }; // points -0.5 … 1.5
    for (const [a, b] of [
      [-2, -1],
      [-0.7, 0.1],
      [0.13, 0.14],
      [0.2, 1.9],
      [1.4, 3],
    ] as const) {
      let riemann = 0;
      const n = 200_000;
      for (let i = 0; i < n; i++) {
        const x = a + ((i + 0.5) * (b - a)) / n;
        const q = Math.min(1.5, Math.max(-0.5, -0.5 + Math.round((x + 0.5) / 0.25) * 0.25));
        riemann += ((x - q) ** 2 * (b - a)) / n;
      }
      expect(squaredErrorIntegral(a, b, grid)).toBeCloseTo(riemann, 9);
    }
  });

  it('on a long-tailed ReLU-like tensor, its range quantizes with less error than minmax and percentile ranges', () => {
    const rand = mulberry32(5);
    // Half zeros, the rest exponential (a long tail of rare large values): a typical ReLU output.
    const values = new Float32Array(200_000).map(() => (rand() < 0.5 ? 0 : -Math.log(Math.max(rand(), 1e-12))));
    const signed = new SignedHistogram(4096);
    const abs = new AbsHistogram(2048);
    signed.add(values);
    abs.add(values);
    const mse = mseRange(signed.snapshot(), (r) => quantGridOf(r, { type: 'uint8' }));
    const minmax = { min: signed.snapshot().min, max: signed.snapshot().max };
    const percentile = percentileRange(abs.snapshot(), 99.999);
    // The search's model of the error agrees with quantizing the values themselves …
    const modelled = expectedSquaredError(signed.snapshot(), quantGridOf(mse, { type: 'uint8' }));
    expect(modelled / measuredError(values, mse)).toBeGreaterThan(0.8);
    expect(modelled / measuredError(values, mse)).toBeLessThan(1.25);
    // … and its range is better than the others on them.
    expect(mse.max).toBeLessThan(minmax.max);
    expect(measuredError(values, mse)).toBeLessThan(measuredError(values, percentile));
    expect(measuredError(values, mse)).toBeLessThan(measuredError(values, minmax));
  });
});

describe('on the trained tiny CNN, held-out images', () => {
  it('MSE ranges quantize the activations themselves with less error than minmax and percentile ranges', async () => {
    // Each calibrated activation of the float model, quantized alone with the range each method chose:
    // the error the search minimizes, measured on images it did not calibrate on.
    const reports = { minmax: await quantize('minmax'), percentile: await quantize('percentile'), mse: await quantize('mse') };
    const original = await loadModel(net.modelPath);
    const present = new Set((original.graph?.node ?? []).flatMap((n) => n.output ?? []));
    const names = reports.mse.tensors.filter((t) => !t.sharedWith && present.has(t.tensor)).map((t) => t.tensor);
    expect(names.length).toBeGreaterThanOrEqual(5);
    const session = await createSession(withExtraOutputs(original, names));
    const relative: Record<string, number> = {};
    try {
      for (const [method, report] of Object.entries(reports)) {
        let total = 0;
        for (const name of names) {
          const t = report.tensors.find((x) => x.tensor === name)!;
          let err = 0;
          let power = 0;
          for (const x of net.eval.tensors) {
            const v = (await session.run({ input: new ort.Tensor('float32', x, net.inputDims) }, [name]))[name]!.data as Float32Array;
            for (const a of v) {
              const q = (Math.min(255, Math.max(0, Math.round(a / t.scale) + t.zeroPoint)) - t.zeroPoint) * t.scale;
              err += (a - q) ** 2;
              power += a * a;
            }
          }
          total += err / power;
        }
        relative[method] = total;
      }
    } finally {
      await session.release();
    }
    expect(relative.mse).toBeLessThan(relative.minmax!);
    expect(relative.mse).toBeLessThan(relative.percentile!);
  }, 120_000);

  // Percentile is left out: its gain here is within what another CPU's kernels could move. minmax
  // gains 1.0 dB (39.49 → 40.48) and mse 0.7 dB; with the mean error taken over every position instead
  // of those the Relu keeps, minmax gained 0.23 dB, below the bound asserted.
  for (const [method, gainDb] of [
    ['minmax', 0.5],
    ['mse', 0.3],
  ] as const) {
    it(`${method}: sequential bias correction raises the logits SQNR`, async () => {
      const plain = await quantize(method);
      const corrected = await quantize(method, true);
      // its 7 Conv/Gemm layers, and the avg pool's depthwise conv
      expect(corrected.biasCorrection).toMatchObject({ layers: 8, inputs: 32 });
      expect(corrected.biasCorrection!.passes).toBeGreaterThan(1);
      expect(plain.biasCorrection).toBeUndefined();
      expect(corrected.heldOut!.tensor).toBe('logits');
      expect(corrected.heldOut!.sqnrDb!).toBeGreaterThan(plain.heldOut!.sqnrDb! + gainDb);
    }, 120_000);
  }
});

describe('the report of model quantize', () => {
  it('holds out every 5th calibration image: the end-to-end figure is on images it did not calibrate on', async () => {
    // Twenty images in the folder, the 5th, 10th, 15th and 20th (sorted) taken from the held-out set:
    // calibrating on the folder must give exactly the ranges of calibrating on the other sixteen alone.
    const folder = path.join(dir, 'folder');
    const sixteen = path.join(dir, 'sixteen');
    await mkdir(folder);
    await mkdir(sixteen);
    const cal = net.calibration.files.slice(0, 16);
    const held = net.eval.files.slice(0, 4);
    const order = Array.from({ length: 20 }, (_, i) => (i % 5 === 4 ? held[(i - 4) / 5]! : cal[i - Math.floor(i / 5)]!));
    expect(new Set(order).size).toBe(20);
    for (const [i, f] of order.entries()) await copyFile(f, path.join(folder, `${String(i).padStart(2, '0')}.jpg`));
    for (const [i, f] of cal.entries()) await copyFile(f, path.join(sixteen, `${String(i).padStart(2, '0')}.jpg`));
    const out = process.stdout.write;
    process.stdout.write = () => true; // the command prints its report; the test reads the returned one
    let split: QuantizeReport;
    let alone: QuantizeReport;
    try {
      const run = (calibration: string, name: string, evalImages?: string) =>
        quantizeCommand((() => ({}) as Config) as () => Config, createSilentLogger(), {
          input: net.modelPath,
          output: path.join(dir, `${name}.onnx`),
          calibration,
          method: 'percentile',
          json: true,
          ...(evalImages ? { evalImages } : {}),
        });
      split = await run(folder, 'split');
      alone = await run(sixteen, 'alone', sixteen);
    } finally {
      process.stdout.write = out;
    }
    expect(split.calibrationImages).toBe(16);
    expect(split.heldOut).toMatchObject({ images: 4, tensor: 'logits' });
    expect(split.heldOut!.sqnrDb).toBeGreaterThan(20);
    expect(split.heldOut!.top1Agreement).toBeGreaterThanOrEqual(0);
    expect(split.tensors).toEqual(alone.tensors);
    // --eval-images: the whole folder calibrates, the other folder is the held-out set.
    expect(alone.calibrationImages).toBe(16);
    expect(alone.heldOut!.images).toBe(16);
    expect(split.worstLayers.length).toBeGreaterThan(0);
  }, 120_000);
});

describe('layer inputs and float outputs (for AdaRound)', () => {
  it("gives a layer's inputs in the quantized network and its float outputs, per network input", async () => {
    const original = await loadModel(net.modelPath);
    const { model: prepared } = prepareModel(original, { shapes: await probeTensors(original) });
    const types = await probeTensors(prepared);
    const plan = planQdq(prepared, types, { activationType: 'uint8' });
    const activations = [...plan.own];
    const inputs = net.calibration.tensors.slice(0, 3);
    // calibrated on the prepared model: the plan's has its Relu folded away
    const { ranges } = await calibrate(prepared, activations, each(net.calibration.tensors), {
      method: 'minmax',
      inputName: 'input',
      inputDims: net.inputDims,
    });
    const emitted = emitQdq(plan, ranges, { activationType: 'uint8' });
    const layers = describeLayers(plan, emitted.layers);
    const conv2 = layers.find((l) => l.node === 'conv2')!;
    expect(conv2.generation).toBe(2);
    const floatSession = await createSession(withExtraOutputs(prepared, [...layers.map((l) => l.floatOutput), conv2.floatInput]));
    const probe = await createProbeSession(emitted.model, layers);
    try {
      const ctx = { probe, float: floatSession, layers, corrections: new Map(), inputName: 'input', inputDims: net.inputDims };
      const io = await layerInputsAndFloatOutputs(ctx, conv2, inputs);
      expect(io.quantizedInputs).toHaveLength(3);
      expect(io.floatOutputs).toHaveLength(3);
      for (const [k, x] of inputs.entries()) {
        const feed = { input: new ort.Tensor('float32', x, net.inputDims) };
        const f = await floatSession.run(feed, [conv2.floatInput, conv2.floatOutput]);
        // The float output is the float network's; the input is the quantized network's: close to
        // the float input, not equal, and on the grid of conv1's output quantization.
        expect(io.floatOutputs[k]!.data).toEqual(f[conv2.floatOutput]!.data);
        const q = io.quantizedInputs[k]!.data as Float32Array;
        const fin = f[conv2.floatInput]!.data as Float32Array;
        expect(q.length).toBe(fin.length);
        expect(sqnrDb(fin, q)).toBeGreaterThan(25);
        expect(sqnrDb(fin, q)).toBeLessThan(Infinity);
        const scale = emitted.tensors.find((t) => t.tensor === conv2.floatInput)!.scale;
        for (const v of q.subarray(0, 200)) expect(Math.abs(v / scale - Math.round(v / scale))).toBeLessThan(1e-3);
      }
    } finally {
      await probe.release();
      await floatSession.release();
    }
  }, 120_000);
});

describe('the error bias correction measures', () => {
  const sums = (channels: number) => ({
    difference: new Float64Array(channels),
    counted: new Float64Array(channels),
    floatSquares: new Float64Array(channels),
    positions: 0,
  });
  // Two images, two channels, three positions: the float output and the quantized network's.
  const float = new ort.Tensor('float32', Float32Array.from([-4, 1, 2, 3, -1, -2, -6, 2, 4, 0, 5, -3]), [2, 2, 3]);
  const quantized = new ort.Tensor('float32', Float32Array.from([-1, 1.5, 2.5, 3, 0, -1, -2, 2.5, 4.5, 1, 6, -1]), [2, 2, 3]);

  it('where a Relu is folded, is the mean over the positions the float network keeps (> 0)', () => {
    const s = sums(2);
    addChannelErrors(float, quantized, true, s);
    // channel 0: float 1, 2 (image 1) and 2, 4 (image 2) are kept; their errors are all -0.5
    // channel 1: float 3 and 5 are kept: errors 0 and -1. The negative positions' errors (-3, +2, ...) are not counted.
    expect(Array.from(s.difference)).toEqual([-2, -1]);
    expect(Array.from(s.counted)).toEqual([4, 2]);
    expect(s.positions).toBe(6);
    expect(Array.from(s.floatSquares)).toEqual([16 + 1 + 4 + 36 + 4 + 16, 9 + 1 + 4 + 0 + 25 + 9]);
  });

  it('elsewhere, is the mean over every position', () => {
    const s = sums(2);
    addChannelErrors(float, quantized, false, s);
    expect(Array.from(s.difference)).toEqual([-3 - 0.5 - 0.5 - 4 - 0.5 - 0.5, 0 - 1 - 1 - 1 - 1 - 2]);
    expect(Array.from(s.counted)).toEqual([6, 6]);
  });

  it('refuses outputs of different shapes', () => {
    const other = new ort.Tensor('float32', new Float32Array(6), [1, 2, 3]);
    expect(() => addChannelErrors(float, other, true, sums(2))).toThrow(/equal shapes/);
  });
});

describe('bias correction of a layer without a bias', () => {
  it('gives the layer an int32 bias behind a DequantizeLinear, which ORT fuses', async () => {
    const file = path.join(dir, 'small.onnx');
    await saveModel(buildSmallCnn(), file);
    const report = await quantizeModel({
      input: file,
      output: path.join(dir, 'small-bc.onnx'),
      calibration: { images: smallInputs(12) },
      evaluation: { images: smallInputs(6, 9) },
      method: 'minmax',
      biasCorrection: { images: 8 },
    });
    expect(report.biasCorrection).toMatchObject({ inputs: 8, saturated: 0 });
    const q = await loadModel(path.join(dir, 'small-bc.onnx'));
    const branchA = q.graph!.node!.find((n) => n.name === 'branch_a')!;
    expect(branchA.input).toHaveLength(3);
    const biasDq = q.graph!.node!.find((n) => n.output?.[0] === branchA.input![2])!;
    expect(biasDq.opType).toBe('DequantizeLinear');
    expect(q.graph!.initializer!.find((t) => t.name === biasDq.input![0])!.dataType).toBe(6); // INT32
    // The fused session (the daemon's) runs it with QLinearConv for that layer.
    const session = await ort.InferenceSession.create(path.join(dir, 'small-bc.onnx'), {
      graphOptimizationLevel: 'all',
      optimizedModelFilePath: path.join(dir, 'small-bc.opt.onnx'),
    });
    await session.release();
    const optimized = await loadModel(path.join(dir, 'small-bc.opt.onnx'));
    expect(optimized.graph!.node!.filter((n) => n.opType === 'Conv')).toHaveLength(0);
    expect(report.heldOut!.sqnrDb).toBeGreaterThan(10);
  }, 120_000);
});
