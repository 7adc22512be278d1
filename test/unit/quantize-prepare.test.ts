import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { DataType, encodeModel, makeNode, makeTensor, makeValueInfo, onnx, opsetVersion, tensorToFloat32 } from '../../src/model/onnx.js';
import { probeTensors } from '../../src/model/quantize/calibrate.js';
import { sqnrDb } from '../../src/model/quantize/numeric.js';
import { poolsToDepthwise, prepareModel, UnsupportedModelError } from '../../src/model/quantize/prepare.js';
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

describe('poolsToDepthwise: AveragePool as a depthwise conv, exact in float', () => {
  const C = 5;
  const H = 9;
  const W = 8;

  function poolModel(attrs: Record<string, number[] | number>): onnx.ModelProto {
    const g = onnx.GraphProto.create({
      name: 'pool',
      node: [makeNode('AveragePool', ['x'], ['y'], attrs, 'the_pool')],
      input: [makeValueInfo('x', DataType.FLOAT, [1, C, H, W])],
      output: [makeValueInfo('y', DataType.FLOAT, ['n', 'c', 'h', 'w'])],
    });
    return onnx.ModelProto.create({ irVersion: 7, opsetImport: [{ domain: '', version: 13 }], graph: g });
  }

  async function output(m: onnx.IModelProto, input: Float32Array): Promise<Float32Array> {
    const s = await ort.InferenceSession.create(encodeModel(m), { graphOptimizationLevel: 'disabled' });
    try {
      return (await s.run({ x: new ort.Tensor('float32', input, [1, C, H, W]) })).y!.data as Float32Array;
    } finally {
      await s.release();
    }
  }

  // map: the count map's values, largest first; its value inside the image is the last
  const cases: Array<{ what: string; attrs: Record<string, number[] | number>; map?: number[] }> = [
    // 36 / window size: 9 in the corners, 6 on the edges, 4 inside.
    { what: '3×3, stride 1, padding 1 left out of the average', attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, map: [9, 6, 4] },
    { what: '3×3, padding counted', attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 } },
    { what: '2×2, stride 2, no padding', attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
    // 9 rows, 8 columns: only the last column's windows reach the padding (3 × 2 values: 18 / 6).
    { what: '3×3, stride 2, padding at the end only', attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [0, 0, 1, 1] }, map: [3, 2] },
    { what: '5×3, padding 2 and 1', attrs: { kernel_shape: [5, 3], pads: [2, 1, 2, 1] }, map: [60, 45, 40, 36, 30, 24] },
    { what: 'the whole image (a global pool)', attrs: { kernel_shape: [H, W] } },
  ];
  for (const c of cases) {
    it(c.what, async () => {
      const original = poolModel(c.attrs);
      const model = onnx.ModelProto.decode(onnx.ModelProto.encode(original).finish());
      const shapes = await probeTensors(model);
      const g = model.graph as onnx.GraphProto;
      const mapped = c.map ? [{ windowSums: 'y_window_sum', mul: 'the_pool_count', inside: c.map.at(-1) }] : [];
      expect(poolsToDepthwise(g, shapes)).toEqual({ pools: 1, countMaps: mapped });
      const conv = g.node.find((n) => n.opType === 'Conv')!;
      expect(conv.name).toBe('the_pool'); // --exclude and the reports still find it by the pool's name
      expect(conv.attribute!.find((a) => a.name === 'group')!.i).toBe(C);
      const mul = g.node.find((n) => n.opType === 'Mul');
      expect(mul !== undefined).toBe(c.map !== undefined);
      if (c.map) {
        const map = g.initializer.find((t) => t.name === mul!.input![1])!;
        expect([...new Set(tensorToFloat32(map))].sort((a, b) => b - a)).toEqual(c.map);
      }
      for (const input of [Float32Array.from({ length: C * H * W }, (_, i) => Math.sin(i * 0.37) * 3 + 1)]) {
        // float rounding only
        expect(sqnrDb(await output(original, input), await output(model, input))).toBeGreaterThan(100);
      }
    });
  }

  it('leaves a pool whose count map would not fit 8 bits, and ceil_mode, alone', async () => {
    const refused: Array<Record<string, number[] | number>> = [
      // 7×7 windows clipped to 4…7 rows and columns: their least common multiple is far above 127 × 16
      { kernel_shape: [7, 7], pads: [3, 3, 3, 3] },
      { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 },
    ];
    for (const attrs of refused) {
      const model = poolModel(attrs);
      expect(poolsToDepthwise(model.graph!, await probeTensors(model))).toEqual({ pools: 0, countMaps: [] });
      expect(ops(model)).toEqual(['AveragePool']);
    }
  });
});
