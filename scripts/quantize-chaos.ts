/**
 * Why the built model's INT8 output SQNR is low: its synthetic weights amplify any perturbation.
 * Prints the FP32 output SQNR under tiny input noise, and the INT8 per-layer SQNR by depth.
 * Needs the bench's files: run bench/quantize-inception.ts first, then
 *   npx tsc -p bench/tsconfig.quantize.json && node node_modules/.cache/qbench/scripts/quantize-chaos.js
 */
import * as ort from 'onnxruntime-node';
import { readFileSync, readdirSync } from 'node:fs';
import { createPreprocessor } from '../src/vision/index.js';
import { builtInputSpec } from '../src/model/build.js';
import { sqnrDb } from '../src/model/quantize/numeric.js';
import { quantizeModel } from '../src/model/quantize/index.js';
const dir = '/tmp/inceptiond-quantize-bench';
const pre = createPreprocessor(builtInputSpec());
const x = (await pre(readFileSync(`${dir}/eval/img000.jpg`))).tensor.data;
const s = await ort.InferenceSession.create(`${dir}/inception-v2.onnx`);
const run = async (d: Float32Array) =>
  (await s.run({ data_0: new ort.Tensor('float32', d, [1, 3, 224, 224]) })).prob_1!.data as Float32Array;
const a = await run(x);
for (const amp of [0.01, 0.1, 0.5]) {
  let seed = 1;
  const y = x.map((v) => v + ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 2 * amp);
  console.log(`input noise ±${amp}: input SQNR ${sqnrDb(x, y).toFixed(1)} dB → output SQNR ${sqnrDb(a, await run(y)).toFixed(1)} dB`);
}
const images = readdirSync(`${dir}/cal`)
  .map((f) => `${dir}/cal/${f}`)
  .slice(0, 4);
const rep = await quantizeModel({
  input: `${dir}/inception-v2.onnx`,
  output: '/tmp/q/w.onnx',
  calibration: { images },
  method: 'minmax',
  worstLayers: 1000,
});
const order = [
  'conv1/7x7_s2_relu',
  'conv2/3x3_reduce_relu',
  'conv2/3x3_relu',
  'inception_3a/output',
  'inception_3b/output',
  'inception_3c/output',
  'inception_4a/output',
  'inception_4c/output',
  'inception_4e/output',
  'inception_5a/output',
  'inception_5b/output',
  'pool_global',
];
for (const n of order) console.log(n, rep.worstLayers.find((l) => l.tensor === n)?.sqnrDb.toFixed(1));
