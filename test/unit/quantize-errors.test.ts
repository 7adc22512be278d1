import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveModel } from '../../src/model/onnx.js';
import { listCalibrationImages, quantizeModel } from '../../src/model/quantize/index.js';
import { createPreprocessor } from '../../src/vision/index.js';
import { buildSmallCnn, optimizedOpTypes, SMALL_SIZE, smallInputs, writeImages } from './quantize-fixtures.js';

let dir: string;
let fp32: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'quantize-errors-'));
  fp32 = path.join(dir, 'small.onnx');
  await saveModel(buildSmallCnn(), fp32);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

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

describe('quantizeModel rejects bad input clearly', () => {
  it('a file that is not ONNX', async () => {
    const bogus = path.join(dir, 'bogus.onnx');
    await writeFile(bogus, 'this is not a protobuf model, just text\n');
    await expect(
      quantizeModel({ input: bogus, output: path.join(dir, 'x.onnx'), calibration: { images: smallInputs(1) }, method: 'minmax' }),
    ).rejects.toThrow(/not an ONNX model: .*bogus\.onnx/);
  });

  it('an empty calibration folder, and an empty image list', async () => {
    const empty = path.join(dir, 'empty');
    await mkdir(empty);
    await writeFile(path.join(empty, 'README.txt'), 'not an image');
    await expect(listCalibrationImages(empty)).rejects.toThrow(/has no images/);
    await expect(listCalibrationImages(path.join(dir, 'missing'))).rejects.toThrow(/cannot be read/);
    await expect(
      quantizeModel({ input: fp32, output: path.join(dir, 'x.onnx'), calibration: { images: [], preprocess }, method: 'minmax' }),
    ).rejects.toThrow(/no calibration images/);
  });

  it('an unknown method or activation type', async () => {
    const base = { input: fp32, output: path.join(dir, 'x.onnx'), calibration: { images: smallInputs(1) } };
    await expect(quantizeModel({ ...base, method: 'kl' as 'minmax' })).rejects.toThrow(/minmax, percentile, entropy, mse/);
    await expect(quantizeModel({ ...base, method: 'minmax', activationType: 'int4' as 'int8' })).rejects.toThrow(/uint8, int8 or uint16/);
    await expect(quantizeModel({ ...base, method: 'percentile', percentile: 120 })).rejects.toThrow(/percentile/);
  });

  it('calibration tensors of the wrong size', async () => {
    async function* wrong(): AsyncGenerator<Float32Array> {
      yield new Float32Array(10);
    }
    await expect(
      quantizeModel({ input: fp32, output: path.join(dir, 'x.onnx'), calibration: { images: wrong() }, method: 'minmax' }),
    ).rejects.toThrow(/has 10 values; the model input image needs 3072/);
  });

  it('an unreadable image is skipped with a warning naming it; all unreadable is an error naming one', async () => {
    const cal = path.join(dir, 'cal');
    await mkdir(cal);
    const good = await writeImages(cal, 2, 9, 48);
    const broken = path.join(cal, 'broken.jpg');
    await writeFile(broken, Buffer.from([0xff, 0xd8, 0xff, 0x00, 1, 2, 3]));
    const report = await quantizeModel({
      input: fp32,
      output: path.join(dir, 'cal.int8.onnx'),
      calibration: { images: [...good, broken], preprocess },
      method: 'minmax',
    });
    expect(report.calibrationImages).toBe(2);
    expect(report.skippedImages.map((s) => s.image)).toEqual([broken]);
    expect(report.warnings.join('\n')).toContain(broken);

    await expect(
      quantizeModel({ input: fp32, output: path.join(dir, 'x.onnx'), calibration: { images: [broken], preprocess }, method: 'minmax' }),
    ).rejects.toThrow(/none of the 1 calibration images could be read \(first: .*broken\.jpg/);
  });
});

describe('ops without an int8 kernel', () => {
  it('stay float with a warning naming them; the rest is still quantized and the model runs', async () => {
    const input = path.join(dir, 'lrn.onnx');
    const output = path.join(dir, 'lrn.int8.onnx');
    await saveModel(buildSmallCnn({ unsupportedOp: true }), input);
    const report = await quantizeModel({ input, output, calibration: { images: smallInputs(4) }, method: 'entropy' });
    expect(report.warnings.some((w) => w.includes('LRN') && w.includes('lrn1'))).toBe(true);
    expect(report.floatNodes).toContainEqual(expect.objectContaining({ name: 'lrn1', opType: 'LRN' }));
    // conv1 keeps its Relu-folded int8 output; the LRN reads a DequantizeLinear and its output is
    // re-quantized for the MaxPool.
    const ops = await optimizedOpTypes(output, path.join(dir, 'lrn.int8.opt.onnx'));
    expect(ops).toContain('LRN');
    expect(ops).not.toContain('Conv');
    const s = await ort.InferenceSession.create(output);
    const r = await s.run({
      image: new ort.Tensor('float32', new Float32Array(3 * SMALL_SIZE * SMALL_SIZE).fill(100), [1, 3, SMALL_SIZE, SMALL_SIZE]),
    });
    await s.release();
    expect((r.prob!.data as Float32Array).length).toBe(10);
  });

  it('excluded nodes stay float; an unknown exclude name is reported', async () => {
    const output = path.join(dir, 'excl.int8.onnx');
    const report = await quantizeModel({
      input: fp32,
      output,
      calibration: { images: smallInputs(3) },
      method: 'minmax',
      exclude: ['fc', 'no_such_node'],
    });
    expect(report.floatNodes).toContainEqual(expect.objectContaining({ name: 'fc', reason: 'excluded by request' }));
    expect(report.warnings.join('\n')).toMatch(/no_such_node: no node has that name/);
    const ops = await optimizedOpTypes(output, path.join(dir, 'excl.int8.opt.onnx'));
    expect(ops).not.toContain('com.microsoft:QGemm');
    expect(ops.some((o) => o === 'Gemm' || o.endsWith('FusedGemm'))).toBe(true);
  });

  it('uint16 activations use com.microsoft Q/DQ (below opset 21) and the model runs', async () => {
    const output = path.join(dir, 'u16.int8.onnx');
    await quantizeModel({ input: fp32, output, calibration: { images: smallInputs(3) }, method: 'minmax', activationType: 'uint16' });
    const { loadModel } = await import('../../src/model/onnx.js');
    const m = await loadModel(output);
    const q = (m.graph?.node ?? []).filter((n) => n.opType === 'QuantizeLinear');
    expect(q.length).toBeGreaterThan(0);
    expect(q.every((n) => n.domain === 'com.microsoft')).toBe(true);
    const s = await ort.InferenceSession.create(output);
    const r = await s.run({
      image: new ort.Tensor('float32', new Float32Array(3 * SMALL_SIZE * SMALL_SIZE).fill(50), [1, 3, SMALL_SIZE, SMALL_SIZE]),
    });
    await s.release();
    expect((r.prob!.data as Float32Array).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 3);
  });
});
