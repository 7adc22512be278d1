import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DataType,
  loadModel,
  makeModel,
  makeNode,
  makeTensor,
  makeValueInfo,
  onnx,
  saveModel,
  tensorToFloat32,
} from '../../src/model/onnx.js';
import { quantizeModel } from '../../src/model/quantize/index.js';
import { sqnrDb } from '../../src/model/quantize/numeric.js';
import { buildSmallCnn, lcg, optimizedOpTypes, SMALL_SIZE, smallInputList, smallInputs } from './quantize-fixtures.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'quantize-qdq-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('QDQ parameters', () => {
  it('Concat inputs that are ReLU outputs reuse the Concat scale/zero point', async () => {
    const fp32 = path.join(dir, 'small.onnx');
    await saveModel(buildSmallCnn(), fp32);
    const report = await quantizeModel({
      input: fp32,
      output: path.join(dir, 'small.int8.onnx'),
      calibration: { images: smallInputs(4) },
      method: 'minmax',
    });
    const byName = new Map(report.tensors.map((t) => [t.tensor, t]));
    const cat = byName.get('cat')!;
    expect(cat.zeroPoint).toBe(0); // all inputs are ReLU outputs: range starts at 0
    for (const input of ['a3', 'b2']) {
      expect(byName.get(input)).toMatchObject({ sharedWith: 'cat', scale: cat.scale, zeroPoint: 0 });
    }
    // MaxPool output shares the (folded) conv1 Relu output's parameters, so ORT drops its Q/DQ.
    expect(byName.get('p1')).toMatchObject({ sharedWith: 'r1' });
  });

  it('a folded Relu keeps its own range (zero point at qmin) when the Concat range goes below 0', async () => {
    // x → Conv A → Relu ─┐
    // x → Conv B ────────┴→ Concat → out      (B's output is negative in places)
    const rnd = lcg(3);
    const w = (n: number): Float32Array => Float32Array.from({ length: n }, () => rnd() - 0.5);
    const g = onnx.GraphProto.create({
      name: 'cat_neg',
      node: [
        makeNode('Conv', ['x', 'wa'], ['a'], { kernel_shape: [1, 1] }, 'conv_a'),
        makeNode('Relu', ['a'], ['a_relu'], {}, 'relu_a'),
        makeNode('Conv', ['x', 'wb'], ['b'], { kernel_shape: [1, 1] }, 'conv_b'),
        makeNode('Concat', ['a_relu', 'b'], ['cat'], { axis: 1 }, 'concat'),
        makeNode('GlobalAveragePool', ['cat'], ['out'], {}, 'gap'),
      ],
      initializer: [makeTensor('wa', DataType.FLOAT, [4, 3, 1, 1], w(12)), makeTensor('wb', DataType.FLOAT, [4, 3, 1, 1], w(12))],
      input: [makeValueInfo('x', DataType.FLOAT, [1, 3, 8, 8])],
      output: [makeValueInfo('out', DataType.FLOAT, [1, 8, 1, 1])],
    });
    const fp32 = path.join(dir, 'catneg.onnx');
    const int8 = path.join(dir, 'catneg.int8.onnx');
    await saveModel(makeModel({ graph: g, opset: 13 }), fp32);
    async function* inputs(): AsyncGenerator<Float32Array> {
      for (let k = 0; k < 3; k++) yield Float32Array.from({ length: 3 * 64 }, () => rnd() * 4 - 2);
    }
    const report = await quantizeModel({ input: fp32, output: int8, calibration: { images: inputs() }, method: 'minmax' });
    const byName = new Map(report.tensors.map((t) => [t.tensor, t]));
    expect(byName.get('cat')!.min).toBeLessThan(0);
    expect(byName.get('cat')!.zeroPoint).toBeGreaterThan(0);
    expect(byName.get('a_relu')).toMatchObject({ zeroPoint: 0 });
    expect(byName.get('a_relu')!.sharedWith).toBeUndefined();
    expect(byName.get('b')).toMatchObject({ sharedWith: 'cat' });

    // The clamp survives: in the QDQ model, the dequantized a_relu is never negative.
    const m = await loadModel(int8);
    const dq = m.graph!.node!.find((n) => n.opType === 'DequantizeLinear' && n.input![0]!.startsWith('a_relu'))!;
    const zp = m.graph!.initializer!.find((t) => t.name === dq.input![2])!;
    expect(zp.dataType).toBe(DataType.UINT8);
    expect(Array.from(zp.rawData ?? [])).toEqual([0]);
    const scale = tensorToFloat32(m.graph!.initializer!.find((t) => t.name === dq.input![1])!);
    expect(scale[0]).toBeCloseTo(byName.get('a_relu')!.scale, 10);
  });

  it('Clip(0, 6) folds into its producer like a Relu; the range stays within [0, 6]', async () => {
    const fp32 = path.join(dir, 'relu6.onnx');
    const int8 = path.join(dir, 'relu6.int8.onnx');
    await saveModel(buildSmallCnn({ relu6: true }), fp32);
    const report = await quantizeModel({ input: fp32, output: int8, calibration: { images: smallInputs(4) }, method: 'minmax' });
    expect(report.foldedRelus).toBe(3);
    const a3 = report.tensors.find((t) => t.tensor === 'a3')!;
    expect(a3.min).toBeGreaterThanOrEqual(0);
    expect(a3.max).toBeLessThanOrEqual(6);
    const ops = await optimizedOpTypes(int8, path.join(dir, 'relu6.int8.opt.onnx'));
    expect(ops).not.toContain('Clip');
    expect(ops).not.toContain('Conv');
  });

  it('int8 activations (S8S8) fuse into QLinearConv where ORT allows int8 (ARM; forced here)', async () => {
    const fp32 = path.join(dir, 's8.onnx');
    const int8 = path.join(dir, 's8.int8.onnx');
    await saveModel(buildSmallCnn({ seed: 2 }), fp32);
    const report = await quantizeModel({
      input: fp32,
      output: int8,
      calibration: { images: smallInputs(4) },
      method: 'minmax',
      activationType: 'int8',
    });
    // ReLU outputs start at 0 → zero point at the int8 minimum
    expect(report.tensors.find((t) => t.tensor === 'cat')?.zeroPoint).toBe(-128);
    // ORT allows int8 QDQ fusion by default only on ARM builds (the daemon's boards); on x86 it
    // fuses only part of an S8S8 model, so emulate the ARM setting with the session key.
    const ops = await optimizedOpTypes(int8, path.join(dir, 's8.int8.opt.onnx'), { session: { qdqisint8allowed: '1' } });
    expect(ops).not.toContain('Conv');
    expect(ops.filter((o) => o === 'com.microsoft:QLinearConv').length).toBe(4); // with the avg pool's depthwise conv
    const x = smallInputList(1, 42)[0]!;
    const run = async (file: string): Promise<Float32Array> => {
      const s = await ort.InferenceSession.create(file);
      const out = await s.run({ image: new ort.Tensor('float32', x, [1, 3, SMALL_SIZE, SMALL_SIZE]) });
      await s.release();
      return out.prob!.data as Float32Array;
    };
    expect(sqnrDb(await run(fp32), await run(int8))).toBeGreaterThan(35);
  });
});
