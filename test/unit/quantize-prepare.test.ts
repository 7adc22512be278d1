import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { DataType, encodeModel, makeNode, makeTensor, makeValueInfo, onnx, opsetVersion } from '../../src/model/onnx.js';
import { probeTensors } from '../../src/model/quantize/calibrate.js';
import { sqnrDb } from '../../src/model/quantize/numeric.js';
import { prepareModel, UnsupportedModelError } from '../../src/model/quantize/prepare.js';
import { buildSmallCnn, SMALL_INPUT, SMALL_SIZE, smallInputList } from './quantize-fixtures.js';

async function runModel(m: onnx.IModelProto, input: Float32Array): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(encodeModel(m), { graphOptimizationLevel: 'disabled' });
  try {
    const out = await s.run({ [SMALL_INPUT]: new ort.Tensor('float32', input, [1, 3, SMALL_SIZE, SMALL_SIZE]) });
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.release();
  }
}

function graphOf(m: onnx.IModelProto): onnx.GraphProto {
  return m.graph as onnx.GraphProto;
}

function ops(m: onnx.IModelProto): string[] {
  return (m.graph?.node ?? []).map((n) => n.opType ?? '');
}

/** The small CNN as an opset-9 model: Dropout before the Gemm, initializers listed as inputs. */
function opset9Model(): onnx.ModelProto {
  const m = buildSmallCnn({ seed: 4 });
  const g = m.graph as onnx.GraphProto;
  m.opsetImport = [onnx.OperatorSetIdProto.create({ domain: '', version: 9 })];
  m.irVersion = 3;
  const flatIdx = g.node.findIndex((n) => n.opType === 'Flatten');
  g.node[flatIdx]!.output = ['flat_pre_dropout'];
  g.node.splice(flatIdx + 1, 0, makeNode('Dropout', ['flat_pre_dropout'], ['flat'], { ratio: { float: 0.5 } }, 'drop'));
  for (const t of g.initializer) g.input.push(makeValueInfo(t.name!, t.dataType!, (t.dims ?? []).map(Number)));
  return m;
}

describe('prepareModel: exact rewrites', () => {
  for (const cip of [0, 1] as const) {
    it(`BN folding and the avg-pool/conv swap keep the float output (count_include_pad=${cip})`, async () => {
      const original = buildSmallCnn({ countIncludePad: cip, logitsOutput: true });
      const { model, rewrites } = prepareModel(original);
      expect(ops(model)).not.toContain('BatchNormalization');
      expect(ops(model)).not.toContain('Flatten');
      expect(rewrites.join('\n')).toMatch(/swapped/);
      // the pool now follows the 1×1 conv
      const pool = graphOf(model).node.find((n) => n.opType === 'AveragePool')!;
      const producer = graphOf(model).node.find((n) => n.output?.includes(pool.input![0]!))!;
      expect(producer.opType).toBe('Conv');
      if (cip === 1) expect(ops(model)).toContain('Add'); // bias added after the pool
      for (const input of smallInputList(3, 21)) {
        const a = await runModel(original, input);
        const b = await runModel(model, input);
        // float rounding only: > 100 dB
        expect(sqnrDb(a.logits!, b.logits!)).toBeGreaterThan(100);
      }
    });
  }

  it('upgrades an opset-9 model to 13: Dropout removed, initializers out of the inputs, same output', async () => {
    const original = opset9Model();
    const shapes = await probeTensors(original);
    const { model, rewrites } = prepareModel(original, { shapes });
    expect(opsetVersion(model)).toBe(13);
    expect(ops(model)).not.toContain('Dropout');
    expect(graphOf(model).input.map((i) => i.name)).toEqual([SMALL_INPUT]);
    expect(rewrites.join('\n')).toMatch(/opset 9 → 13/);
    const softmax = graphOf(model).node.find((n) => n.opType === 'Softmax')!;
    expect(softmax.attribute?.find((a) => a.name === 'axis')?.i).toBe(1);
    const input = smallInputList(1, 5)[0]!;
    expect(sqnrDb((await runModel(original, input)).prob!, (await runModel(model, input)).prob!)).toBeGreaterThan(100);
  });

  it('refuses an opset-9 Softmax over flattened dimensions, and an unknown opset-9 op', async () => {
    const g = onnx.GraphProto.create({
      name: 'g',
      node: [makeNode('Softmax', ['x'], ['y'], { axis: 1 }, 'sm')],
      input: [makeValueInfo('x', DataType.FLOAT, [1, 3, 4, 4])],
      output: [makeValueInfo('y', DataType.FLOAT, [1, 3, 4, 4])],
    });
    const m = onnx.ModelProto.create({ irVersion: 4, opsetImport: [{ domain: '', version: 9 }], graph: g });
    const shapes = await probeTensors(m);
    expect(() => prepareModel(m, { shapes })).toThrow(UnsupportedModelError);
    expect(() => prepareModel(m, { shapes })).toThrow(/flattened dims 1\.\.3/);

    const g2 = onnx.GraphProto.create({
      name: 'g2',
      node: [makeNode('Upsample', ['x', 'scales'], ['y'], { mode: 'nearest' }, 'up')],
      initializer: [makeTensor('scales', DataType.FLOAT, [4], Float32Array.of(1, 1, 2, 2))],
      input: [makeValueInfo('x', DataType.FLOAT, [1, 3, 4, 4])],
      output: [makeValueInfo('y', DataType.FLOAT, [1, 3, 8, 8])],
    });
    const m2 = onnx.ModelProto.create({ irVersion: 4, opsetImport: [{ domain: '', version: 9 }], graph: g2 });
    expect(() => prepareModel(m2, { shapes: new Map() })).toThrow(/no exact conversion for Upsample/);
  });
});
