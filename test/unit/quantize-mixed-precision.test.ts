// Accuracy-driven mixed precision (mixed-precision.ts) on the trained tiny CNN: the search keeps the
// fewest activations float that reach a logits SQNR the all-INT8 model misses, the written model has
// them float, a target already met keeps none, an unreachable one stops at the step bound.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, loadModel, makeModel, makeNode, makeTensor, makeValueInfo, saveModel, type onnx } from '../../src/model/onnx.js';
import * as ort from 'onnxruntime-node';
import { createSession, probeTensors, withExtraOutputs } from '../../src/model/quantize/calibrate.js';
import { initializerMap } from '../../src/model/quantize/graph.js';
import { endToEndTensor } from '../../src/model/quantize/held-out.js';
import { quantizeModel, type QuantizeOptions, type QuantizeReport } from '../../src/model/quantize/index.js';
import { floatNodeFacts, parameterGroups, switchProbe, withoutActivationRounding } from '../../src/model/quantize/mixed-precision.js';
import { planQdq } from '../../src/model/quantize/qdq.js';
import { SqnrAccumulator } from '../../src/model/quantize/numeric.js';
import { mulberry32 } from '../../src/util/index.js';
import { trainedTinyCnn, type TrainedTinyCnn } from '../helpers/trained-tiny-cnn.js';

let net: TrainedTinyCnn;
let dir: string;

async function* each(xs: Float32Array[]): AsyncGenerator<Float32Array> {
  for (const x of xs) yield x;
}

function quantize(
  name: string,
  targetSqnrDb: number | undefined,
  maxSteps = 12,
  extra: Partial<QuantizeOptions> & { maxLatencyRatio?: number } = {},
): Promise<QuantizeReport> {
  const { maxLatencyRatio, ...rest } = extra;
  return quantizeModel({
    input: net.modelPath,
    output: path.join(dir, `${name}.onnx`),
    calibration: { images: each(net.calibration.tensors) },
    evaluation: { images: each(net.eval.tensors) },
    method: 'percentile',
    ...(targetSqnrDb !== undefined
      ? {
          targetSqnrDb,
          // few timed runs: latency is reported, never asserted
          mixedPrecision: { maxSteps, timedRuns: 1, ...(maxLatencyRatio !== undefined ? { maxLatencyRatio } : {}) },
        }
      : {}),
    ...rest,
  });
}

/** Each quantized Conv/Gemm's integer weights and bias (the initializers behind its DequantizeLinear inputs), by node name. */
function layerIntegers(model: onnx.IModelProto): Map<string, { weights: number[]; bias: number[] }> {
  const g = model.graph!;
  const inits = initializerMap(g);
  const producers = new Map((g.node ?? []).flatMap((n) => (n.output ?? []).map((o) => [o, n] as const)));
  const integers = (tensor: string | undefined): number[] => {
    const dq = tensor ? producers.get(tensor) : undefined;
    const t = dq?.opType === 'DequantizeLinear' ? inits.get(dq.input![0]!) : undefined;
    if (!t) return [];
    return t.rawData?.length ? Array.from(t.rawData) : (t.int32Data ?? []).map(Number);
  };
  const out = new Map<string, { weights: number[]; bias: number[] }>();
  for (const n of g.node ?? []) {
    if (n.opType !== 'Conv' && n.opType !== 'Gemm') continue;
    const weights = integers(n.input![1]);
    if (weights.length > 0) out.set(n.name!, { weights, bias: integers(n.input![2]) });
  }
  return out;
}

let int8Db: number;
let met: QuantizeReport;

beforeAll(async () => {
  net = await trainedTinyCnn();
  dir = await mkdtemp(path.join(os.tmpdir(), 'quantize-mixed-'));
  met = await quantize('met', -100);
  int8Db = met.mixedPrecision!.steps[0]!.sqnrDb!;
}, 240_000);
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('mixed precision', () => {
  it('keeps nothing when the all-INT8 model already meets the target', () => {
    const mp = met.mixedPrecision!;
    expect(mp.reached).toBe(true);
    expect(mp.kept).toEqual([]);
    expect(mp.steps).toHaveLength(1);
    expect(mp.weightsOnly).toBeUndefined(); // measured only when the target is missed
    expect(mp.images).toMatchObject({ source: 'held-out', count: 16 });
    expect(int8Db).toBeGreaterThan(5);
  });

  it('reaches a target the all-INT8 model misses with fewer activations than all, and writes them float', async () => {
    // between the all-INT8 figure and what keeping everything float would give (identical logits)
    const target = int8Db + 3;
    const r = await quantize('reached', target);
    const mp = r.mixedPrecision!;
    expect(mp.steps[0]!.sqnrDb).toBeCloseTo(int8Db, 6);
    expect(mp.reached).toBe(true);
    const last = mp.steps.filter((s) => s.accepted).at(-1)!;
    expect(last.sqnrDb!).toBeGreaterThanOrEqual(target);
    expect(mp.keptActivations.length).toBeGreaterThan(0);
    expect(mp.keptActivations.length).toBeLessThan(mp.candidates);
    expect(mp.kept).toEqual(last.layers);
    for (const s of mp.steps) expect(s.latencyRatio).toBeGreaterThan(0);

    // The written model: each kept node is float (weights a float initializer, no QuantizeLinear on
    // what it writes), and no kept activation is quantized.
    const model = await loadModel(r.output);
    const g = model.graph!;
    const inits = initializerMap(g);
    const quantizedTensors = new Set((g.node ?? []).filter((n) => n.opType === 'QuantizeLinear').map((n) => n.input![0]!));
    for (const name of mp.kept) {
      const node = (g.node ?? []).find((n) => n.name === name);
      expect(node, name).toBeDefined();
      if (node!.opType === 'Conv' || node!.opType === 'Gemm') expect(inits.get(node!.input![1]!)?.dataType).toBe(1); // FLOAT
      for (const o of node!.output ?? []) if (mp.keptActivations.includes(o)) expect(quantizedTensors.has(o)).toBe(false);
    }
    for (const a of mp.keptActivations) if (a !== 'input') expect(quantizedTensors.has(a), a).toBe(false);
    expect(
      r.floatNodes
        .filter((n) => n.reason === 'excluded by request')
        .map((n) => n.name)
        .sort(),
    ).toEqual([...mp.kept].sort());
    // the manifest says the model is not all INT8
    const manifest = JSON.parse(await readFile(`${r.output}.json`, 'utf8')) as { notes: string };
    expect(manifest.notes).toMatch(/Mixed precision: \d+ node\(s\) kept float/);
  }, 240_000);

  it('stops at the step bound with reached=false when the target cannot be met', async () => {
    const r = await quantize('unreachable', int8Db + 100, 2);
    const mp = r.mixedPrecision!;
    expect(mp.reached).toBe(false);
    expect(mp.steps).toHaveLength(3); // the all-INT8 model and two tried steps
    expect(mp.steps.slice(1).every((s) => s.added !== undefined)).toBe(true);
    // what INT8 weights allow with every activation float: above the all-INT8 figure, below the target
    expect(mp.weightsOnly!.sqnrDb!).toBeGreaterThan(int8Db);
    expect(mp.weightsOnly!.sqnrDb!).toBeLessThan(mp.targetSqnrDb);
  }, 240_000);

  it('reports the written model on all held-out images when they are files, and the all-INT8 figure beside it', async () => {
    const r = await quantize('reached-files', int8Db + 3, 12, { evaluation: { images: net.eval.files } });
    const mp = r.mixedPrecision!;
    expect(mp.kept.length).toBeGreaterThan(0);
    expect(mp.allInt8HeldOut!.images).toBe(net.eval.files.length);
    expect(r.heldOut!.images).toBe(net.eval.files.length);
    expect(r.warnings.filter((w) => /held-out/.test(w))).toEqual([]);
    // the figure, recomputed here from the written model fused as the daemon runs it
    const float = await loadModel(net.modelPath);
    const written = await loadModel(r.output);
    const [f, q] = [endToEndTensor(float), endToEndTensor(written)];
    const floatSession = await createSession(withExtraOutputs(float, [f]));
    const writtenSession = await createSession(withExtraOutputs(written, [q]), { graphOptimizationLevel: 'all' });
    const sqnr = new SqnrAccumulator();
    try {
      for (const x of net.eval.tensors) {
        const feed = { [floatSession.inputNames[0]!]: new ort.Tensor('float32', x, net.inputDims) };
        const fv = (await floatSession.run(feed, [f]))[f]!.data as Float32Array;
        const qv = (await writtenSession.run(feed, [q]))[q]!.data as Float32Array;
        sqnr.add(fv, qv);
      }
    } finally {
      await floatSession.release();
      await writtenSession.release();
    }
    expect(r.heldOut!.sqnrDb!).toBeCloseTo(sqnr.db, 4);
    expect(r.heldOut!.sqnrDb!).not.toBeCloseTo(mp.allInt8HeldOut!.sqnrDb!, 4);
  }, 240_000);

  it('undoes a step that takes the latency over the bound, says so, and writes none of them', async () => {
    // the target int8Db + 3 is reached without a bound (above); no model runs in a millionth of FP32's time
    const r = await quantize('bounded', int8Db + 3, 12, { maxLatencyRatio: 1e-6 });
    const mp = r.mixedPrecision!;
    expect(mp.maxLatencyRatio).toBe(1e-6);
    expect(mp.reached).toBe(false);
    expect(mp.kept).toEqual([]);
    const tried = mp.steps.slice(1);
    expect(tried.some((s) => s.rejected === 'latency')).toBe(true);
    for (const s of tried) {
      expect(s.accepted).toBe(false);
      if (s.rejected === 'latency') expect(s.latencyRatioToFloat).toBeGreaterThan(1e-6);
    }
    expect(r.floatNodes.filter((n) => n.reason === 'excluded by request')).toEqual([]);
  }, 240_000);

  it('keeps AdaRound rounding and bias corrections on every layer a candidate still quantizes', async () => {
    const both = { adaround: { iterations: 100, images: 16 }, biasCorrection: { images: 16 } };
    const allInt8 = await quantize('adaround-bc', undefined, 12, both);
    const mixed = await quantize('adaround-bc-mixed', allInt8.heldOut!.sqnrDb! + 3, 12, both);
    expect(mixed.adaround!.layers).toBe(allInt8.adaround!.layers);
    expect(mixed.biasCorrection!.layers).toBe(allInt8.biasCorrection!.layers);
    // some layers float, the others quantized: each of those as in the all-INT8 model
    expect(mixed.mixedPrecision!.kept.length).toBeGreaterThan(0);
    const reference = layerIntegers(await loadModel(allInt8.output));
    const written = layerIntegers(await loadModel(mixed.output));
    expect(written.size).toBeGreaterThan(0);
    expect(written.size).toBeLessThan(reference.size);
    for (const [node, integers] of written) expect(integers, node).toEqual(reference.get(node));
  }, 240_000);
});

/**
 * Concat inside a Concat, as InceptionV3's mixed9_0 inside mixed9: image[1,3,8,8] → {Conv 3×3 → Relu |
 * Conv 1×1 → Relu} → Concat "inner" → with {Conv 1×1 → Relu} → Concat "outer" → GlobalAveragePool →
 * Flatten → Gemm → Softmax. Seeded weights.
 */
function nestedConcatModel() {
  const random = mulberry32(7);
  const weights = (name: string, dims: number[]) => {
    const n = dims.reduce((a, b) => a * b, 1);
    return makeTensor(
      name,
      DataType.FLOAT,
      dims,
      Float32Array.from({ length: n }, () => random() - 0.5),
    );
  };
  const node = makeNode;
  return makeModel({
    opset: 13,
    graph: {
      name: 'nested-concat',
      input: [makeValueInfo('image', DataType.FLOAT, [1, 3, 8, 8])],
      output: [makeValueInfo('prob', DataType.FLOAT, [1, 5])],
      initializer: [
        weights('wa', [4, 3, 3, 3]),
        weights('wb', [4, 3, 1, 1]),
        weights('wc', [4, 3, 1, 1]),
        weights('wf', [5, 12]),
        weights('bf', [5]),
      ],
      node: [
        node('Conv', ['image', 'wa'], ['a'], { pads: [1, 1, 1, 1] }, 'conv_a'),
        node('Relu', ['a'], ['ar'], {}, 'relu_a'),
        node('Conv', ['image', 'wb'], ['b'], {}, 'conv_b'),
        node('Relu', ['b'], ['br'], {}, 'relu_b'),
        node('Concat', ['ar', 'br'], ['inner'], { axis: 1 }, 'inner'),
        node('Conv', ['image', 'wc'], ['c'], {}, 'conv_c'),
        node('Relu', ['c'], ['cr'], {}, 'relu_c'),
        node('Concat', ['inner', 'cr'], ['outer'], { axis: 1 }, 'outer'),
        node('GlobalAveragePool', ['outer'], ['gap'], {}, 'gap'),
        node('Flatten', ['gap'], ['flat'], {}, 'flatten'),
        node('Gemm', ['flat', 'wf', 'bf'], ['logits'], { transB: 1 }, 'fc'),
        node('Softmax', ['logits'], ['prob'], { axis: 1 }, 'softmax'),
      ],
    },
  });
}

describe('a Concat inside a Concat', () => {
  it('takes the parameters of the outer Concat for itself and its inputs, so neither requantizes', async () => {
    const input = path.join(dir, 'nested-plain.onnx');
    await saveModel(nestedConcatModel(), input);
    const random = mulberry32(5);
    const images = Array.from({ length: 8 }, () => Float32Array.from({ length: 3 * 8 * 8 }, () => random()));
    const output = path.join(dir, 'nested-plain.int8.onnx');
    await quantizeModel({ input, output, calibration: { images: each(images) }, method: 'minmax' });
    const written = await loadModel(output);
    const scaleOf = (t: string) => {
      const q = written.graph!.node!.find((n) => n.opType === 'QuantizeLinear' && n.input![0] === t);
      if (!q) throw new Error(`no QuantizeLinear of ${t}`);
      return q.input![1];
    };
    // Before, the inner Concat's inputs took the inner range's scale while the inner Concat wrote the outer's.
    expect(new Set(['ar', 'br', 'cr', 'inner', 'outer'].map(scaleOf)).size).toBe(1);
  });
});

describe('mixed precision with a Concat inside a Concat', () => {
  it('switches the inner Concat once, with the outer group whose parameters its Q/DQ pair uses', async () => {
    const input = path.join(dir, 'nested.onnx');
    await saveModel(nestedConcatModel(), input);
    const random = mulberry32(11);
    const tensors = (n: number) => Array.from({ length: n }, () => Float32Array.from({ length: 3 * 8 * 8 }, () => random()));
    const r = await quantizeModel({
      input,
      output: path.join(dir, 'nested.int8.onnx'),
      calibration: { images: each(tensors(8)) },
      evaluation: { images: each(tensors(8)) },
      method: 'minmax',
      targetSqnrDb: 500,
      mixedPrecision: { maxSteps: 2, timedRuns: 1 },
    });
    // The inner Concat and its inputs all take the outer Concat's parameters: one group, one switch each.
    for (const t of ['inner', 'ar', 'br', 'cr']) {
      expect(r.tensors.filter((x) => x.tensor === t).map((x) => x.sharedWith)).toEqual(['outer']);
    }
    const groups = parameterGroups(r.tensors);
    expect(groups.get('outer')).toEqual(expect.arrayContaining(['outer', 'inner', 'ar', 'br', 'cr']));
    expect(groups.has('inner')).toBe(false);

    // The probe and the search ran (a second switch on inner's Q/DQ pair made the probe model invalid).
    expect(r.mixedPrecision!.reached).toBe(false);
    expect(r.mixedPrecision!.steps.length).toBeGreaterThan(1);
  });
});

describe('the switch probe with weights', () => {
  // x[1,4] → Q/DQ → Gemm(W per-channel int8, transB) → y: the hand-written all-INT8 model of one layer.
  const W = Float32Array.from([0.31, -0.72, 0.05, 0.9, -0.44, 0.13, 0.66, -0.08, 0.27, -0.95, 0.51, 0.02]); // [3, 4]
  const scales = Float32Array.from([0.9 / 127, 0.66 / 127, 0.95 / 127]);
  const Wq = Int8Array.from(W, (v, i) => Math.round(v / scales[Math.floor(i / 4)]!));
  const xScale = 1 / 255;
  function oneLayer() {
    return makeModel({
      opset: 13,
      graph: {
        name: 'one-layer',
        input: [makeValueInfo('x', DataType.FLOAT, [1, 4])],
        output: [makeValueInfo('y', DataType.FLOAT, [1, 3])],
        initializer: [
          makeTensor('x_scale', DataType.FLOAT, [], Float32Array.of(xScale)),
          makeTensor('x_zp', DataType.UINT8, [], Uint8Array.of(0)),
          makeTensor('w_q', DataType.INT8, [3, 4], Wq),
          makeTensor('w_scale', DataType.FLOAT, [3], scales),
          makeTensor('w_zp', DataType.INT8, [3], new Int8Array(3)),
        ],
        node: [
          makeNode('QuantizeLinear', ['x', 'x_scale', 'x_zp'], ['x_q'], {}, 'x_Q'),
          makeNode('DequantizeLinear', ['x_q', 'x_scale', 'x_zp'], ['x_dq'], {}, 'x_DQ'),
          makeNode('DequantizeLinear', ['w_q', 'w_scale', 'w_zp'], ['w_dq'], { axis: 0 }, 'w_DQ'),
          makeNode('Gemm', ['x_dq', 'w_dq'], ['y'], { transB: 1 }, 'fc'),
        ],
      },
    });
  }
  const x = Float32Array.from([0.2, 0.537, 0.91, 0.004]);
  const gemm = (xs: ArrayLike<number>, ws: ArrayLike<number>) =>
    [0, 1, 2].map((n) => [0, 1, 2, 3].reduce((a, k) => a + xs[k]! * ws[n * 4 + k]!, 0));
  const rounded = (v: number, s: number) => Math.round(v / s) * s;

  async function run(weights: boolean, on: number): Promise<Float32Array> {
    const floatW = makeTensor('w', DataType.FLOAT, [3, 4], W);
    const { model, switches } = switchProbe(
      oneLayer(),
      new Map([['x', 'x_dq']]),
      new Map([['x', ['x']]]),
      new Map(),
      'y',
      weights ? { floatedBy: (root) => (root === 'x' ? ['fc'] : []), floatWeight: (n) => (n === 'fc' ? floatW : undefined) } : undefined,
    );
    const session = await createSession(model);
    try {
      const feed = { x: new ort.Tensor('float32', x, [1, 4]), [switches.get('x')!]: new ort.Tensor('float32', Float32Array.of(on), []) };
      return (await session.run(feed, ['y'])).y!.data as Float32Array;
    } finally {
      await session.release();
    }
  }

  it('switched on, restores the float weights of the nodes the group runs float, dequantized per channel when off', async () => {
    const float = gemm(x, W);
    const quantized = gemm(
      Array.from(x, (v) => rounded(v, xScale)),
      Array.from(Wq, (q, i) => q * scales[Math.floor(i / 4)]!),
    );
    const on = await run(true, 1);
    const off = await run(true, 0);
    const activationOnly = await run(false, 1);
    for (let n = 0; n < 3; n++) {
      expect(on[n]).toBeCloseTo(float[n]!, 5);
      expect(off[n]).toBeCloseTo(quantized[n]!, 5);
    }
    // without weights the switch restores only the input: the weights' rounding stays
    const weightsRounded = gemm(
      x,
      Array.from(Wq, (q, i) => q * scales[Math.floor(i / 4)]!),
    );
    for (let n = 0; n < 3; n++) expect(activationOnly[n]).toBeCloseTo(weightsRounded[n]!, 5);
    expect(Math.max(...weightsRounded.map((v, n) => Math.abs(v - float[n]!)))).toBeGreaterThan(1e-3);
  });
});

describe('floatNodeFacts', () => {
  it('counts multiply-adds of the Conv/Gemm nodes a group runs float, output elements of the others, and finds their float weights', async () => {
    const model = nestedConcatModel();
    const types = await probeTensors(model);
    const plan = planQdq(model, types, { activationType: 'uint8' });
    const nodes: Record<string, string[]> = { a: ['conv_a'], fc: ['fc'], gap: ['gap'], both: ['conv_a', 'fc'] };
    const facts = floatNodeFacts(plan, types, (root) => nodes[root] ?? []);
    expect(facts.costOf('a')).toBe(4 * 8 * 8 * (3 * 3 * 3)); // [1,4,8,8] outputs, 3×3×3 each
    expect(facts.costOf('fc')).toBe(5 * 12);
    expect(facts.costOf('gap')).toBe(12);
    expect(facts.costOf('both')).toBe(4 * 8 * 8 * 27 + 60);
    expect(facts.weights.floatWeight('fc')?.name).toBe('wf');
    expect(facts.weights.floatWeight('conv_a')?.name).toBe('wa');
    expect(facts.weights.floatWeight('gap')).toBeUndefined();
  });
});

describe('withoutActivationRounding', () => {
  // x → Q/DQ → Mul by a weight (int8 initializer → DequantizeLinear) → pre → Q/DQ (a folded Relu: uint8,
  // zero point 0) → y
  function qdqModel(): onnx.ModelProto {
    const scalar = (name: string, v: number) => makeTensor(name, DataType.FLOAT, [], Float32Array.of(v));
    return makeModel({
      opset: 13,
      graph: {
        name: 'qdq',
        input: [makeValueInfo('x', DataType.FLOAT, [4])],
        output: [makeValueInfo('y', DataType.FLOAT, [4])],
        initializer: [
          scalar('sx', 0.1),
          makeTensor('zx', DataType.UINT8, [], Uint8Array.of(128)),
          makeTensor('wq', DataType.INT8, [], Int8Array.of(77)),
          scalar('sw', 0.013),
          scalar('sy', 0.05),
          makeTensor('zy', DataType.UINT8, [], Uint8Array.of(0)),
        ],
        node: [
          makeNode('QuantizeLinear', ['x', 'sx', 'zx'], ['xq'], {}, 'qx'),
          makeNode('DequantizeLinear', ['xq', 'sx', 'zx'], ['xd'], {}, 'dqx'),
          makeNode('DequantizeLinear', ['wq', 'sw'], ['w'], {}, 'dqw'),
          makeNode('Mul', ['xd', 'w'], ['pre'], {}, 'mul'),
          makeNode('QuantizeLinear', ['pre', 'sy', 'zy'], ['preq'], {}, 'qpre'),
          makeNode('DequantizeLinear', ['preq', 'sy', 'zy'], ['y'], {}, 'dqpre'),
        ],
      },
    });
  }
  const x = Float32Array.of(-3.3333, -0.0123, 0.4567, 7.891);
  const run = async (model: onnx.IModelProto) => {
    const session = await createSession(model);
    try {
      return Array.from((await session.run({ x: new ort.Tensor('float32', x, [4]) })).y!.data as Float32Array);
    } finally {
      await session.release();
    }
  };
  const w = Math.fround(77 * Math.fround(0.013)); // the weight stays INT8: its dequantized value

  it('leaves the weights quantized and the activations float, keeping a folded Relu or Clip as its clamp', async () => {
    const relu = await run(withoutActivationRounding(qdqModel(), new Map([['pre', Infinity]])));
    for (const [i, v] of relu.entries()) expect(v).toBeCloseTo(Math.max(0, Math.fround(x[i]! * w)), 6);
    const clip = await run(withoutActivationRounding(qdqModel(), new Map([['pre', 0.5]])));
    for (const [i, v] of clip.entries()) expect(v).toBeCloseTo(Math.min(0.5, Math.max(0, Math.fround(x[i]! * w))), 6);
    // without the clamp the negative pre-activations would pass: the folded Relu is what removes them
    const none = await run(withoutActivationRounding(qdqModel(), new Map()));
    for (const [i, v] of none.entries()) expect(v).toBeCloseTo(Math.fround(x[i]! * w), 6);
    // the QDQ model itself rounds: x to steps of 0.1, y to steps of 0.05
    const rounded = await run(qdqModel());
    expect(rounded.some((v, i) => Math.abs(v - relu[i]!) > 1e-3)).toBe(true);
  });
});
