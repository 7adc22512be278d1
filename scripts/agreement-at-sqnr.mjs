#!/usr/bin/env node
// How much top-1 agreement an SQNR buys on a given model and image set. Run by hand, never by the tests
// or CI (needs `npm run build`):
//   node scripts/agreement-at-sqnr.mjs FLOAT.onnx IMAGES_DIR [--sqnr 26,29,32,38] [--candidate QDQ.onnx]
// Runs the float model on the images (preprocessed as its manifest says) and takes, per image, the
// margin between its two largest logits. Noise of the power an SQNR allows (the logits' mean power ÷
// 10^(dB/10)), independent and Gaussian on each logit, flips image i with probability
// Φ(−margin_i / (σ·√2)); the sum over the images is the expected number of flips. It is a model (a
// quantized network's error is neither independent between logits nor Gaussian): `--candidate` puts a
// real quantized model's SQNR and flips beside it. Prints one JSON line.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { findManifestForModel } from '../dist/model/manifest.js';
import { loadModel } from '../dist/model/onnx.js';
import { createSession, withExtraOutputs } from '../dist/model/quantize/calibrate.js';
import { endToEndTensor } from '../dist/model/quantize/held-out.js';
import { defaultTimingOptions } from '../dist/model/quantize/mixed-precision.js';
import { SqnrAccumulator } from '../dist/model/quantize/numeric.js';
import { listImageFiles } from '../dist/util/index.js';
import { createPreprocessor } from '../dist/vision/index.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { sqnr: { type: 'string', default: '26,29,32,35,38' }, candidate: { type: 'string' } },
});
const [floatPath, imagesDir] = positionals;
if (!floatPath || !imagesDir) {
  console.error('usage: node scripts/agreement-at-sqnr.mjs FLOAT.onnx IMAGES_DIR [--sqnr 26,29,32] [--candidate QDQ.onnx]');
  process.exit(2);
}

/** Standard normal CDF (Abramowitz & Stegun 7.1.26 for erf; |error| < 1.5e-7). */
function phi(x) {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}
const argmax = (v) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);

const float = await loadModel(floatPath);
const tensor = endToEndTensor(float);
const found = await findManifestForModel(floatPath);
if (!found) throw new Error(`no manifest beside ${floatPath}: cannot preprocess the images`);
const preprocess = createPreprocessor(found.manifest.input);
const files = await listImageFiles(imagesDir, 'image folder');
const session = await createSession(withExtraOutputs(float, [tensor]));
const candidate = values.candidate ? await loadModel(values.candidate) : undefined;
const candTensor = candidate ? endToEndTensor(candidate) : undefined;
const candSession = candidate ? await createSession(withExtraOutputs(candidate, [candTensor]), defaultTimingOptions()) : undefined;
const margins = [];
let power = 0;
let count = 0;
const sqnr = new SqnrAccumulator();
let flips = 0;
for (const file of files) {
  const { tensor: t } = await preprocess(await readFile(file));
  const input = new ort.Tensor('float32', t.data, t.dims);
  const ref = (await session.run({ [session.inputNames[0]]: input }, [tensor]))[tensor].data;
  const sorted = [...ref].sort((a, b) => b - a);
  margins.push(sorted[0] - sorted[1]);
  for (const x of ref) power += x * x;
  count += ref.length;
  if (candSession) {
    const out = (await candSession.run({ [candSession.inputNames[0]]: input }, [candTensor]))[candTensor].data;
    sqnr.add(ref, out);
    if (argmax(out) !== argmax(ref)) flips++;
  }
}
power /= count;
const expectedFlips = (db) => {
  const sigma = Math.sqrt(power / 10 ** (db / 10));
  return margins.reduce((sum, m) => sum + phi(-m / (sigma * Math.SQRT2)), 0);
};
const sortedMargins = [...margins].sort((a, b) => a - b);
const round = (x, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const dbs = values.sqnr.split(',').map(Number);
if (candSession) dbs.push(round(sqnr.db, 2));
console.log(
  JSON.stringify({
    model: floatPath,
    tensor,
    images: files.length,
    logitsRms: round(Math.sqrt(power)),
    smallestMargins: sortedMargins.slice(0, 5).map((m) => round(m, 4)),
    expectedFlips: Object.fromEntries(dbs.map((db) => [`${db} dB`, round(expectedFlips(db), 2)])),
    // the least SQNR at which fewer than half a flip is expected (0.1 dB steps)
    sqnrForHalfFlipDb: (() => {
      for (let db = 0; db <= 120; db += 0.1) if (expectedFlips(db) < 0.5) return round(db, 1);
      return null;
    })(),
    ...(candSession ? { candidate: { path: values.candidate, sqnrDb: round(sqnr.db, 2), flips } } : {}),
  }),
);
