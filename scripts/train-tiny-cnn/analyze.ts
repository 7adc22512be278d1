/**
 * Why INT8 differs from FP32 on the trained tiny CNN (run scripts/train-tiny-cnn.ts first):
 * the images whose top-1 flips and their FP32 margin, logits SQNR vs probability SQNR, how much
 * of the output error energy a few images carry, and minmax variants without the avg-pool swap /
 * without Concat parameter sharing.
 *   npx tsc -p scripts/train-tiny-cnn/tsconfig.json && node node_modules/.cache/train-tiny-cnn/scripts/train-tiny-cnn/analyze.js
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { sessionOptionsFor } from '../../src/inference/session-options.js';
import { evaluateModels } from '../../src/model/eval.js';
import { loadModel } from '../../src/model/onnx.js';
import { withExtraOutputs } from '../../src/model/quantize/calibrate.js';
import { quantizeModel, type CalibrationMethod } from '../../src/model/quantize/index.js';
import { sqnrDb } from '../../src/model/quantize/numeric.js';
import { createPreprocessor } from '../../src/vision/index.js';
import { CLASSES, listSplit } from './data.js';

function repoRoot(): string {
  for (let d = path.dirname(fileURLToPath(import.meta.url)); d !== path.dirname(d); d = path.dirname(d)) {
    const pkg = path.join(d, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'inceptiond') return d;
  }
  throw new Error('cannot find the inceptiond repository root');
}
const work = path.join(repoRoot(), 'tmp', 'trained-cnn');
const fp32 = path.join(work, 'tiny-cnn.onnx');
const opts = sessionOptionsFor(
  { modelPath: '', executionProviders: ['cpu'], threads: 2, allowSpinning: false, graphOptimizationLevel: 'all' },
  'cpu',
);
const manifest = JSON.parse(await readFile(`${fp32}.json`, 'utf8')) as { input: Parameters<typeof createPreprocessor>[0] };
const pre = createPreprocessor(manifest.input);
const evl = await listSplit(path.join(work, 'eval'));
const cal = await listSplit(path.join(work, 'cal'));
const inputs: Float32Array[] = [];
for (const f of evl.files) inputs.push((await pre(await readFile(f))).tensor.data);
const K = CLASSES.length;

/** prob and logits for every eval image. */
async function run(file: string): Promise<{ prob: Float32Array[]; logits: Float32Array[] }> {
  const s = await ort.InferenceSession.create(
    Buffer.from((await import('../../src/model/onnx.js')).encodeModel(withExtraOutputs(await loadModel(file), ['logits']))),
    opts,
  );
  const prob: Float32Array[] = [];
  const logits: Float32Array[] = [];
  for (const x of inputs) {
    const o = await s.run({ input: new ort.Tensor('float32', x, [1, 3, 32, 32]) });
    prob.push(Float32Array.from(o.prob!.data as Float32Array));
    logits.push(Float32Array.from(o.logits!.data as Float32Array));
  }
  await s.release();
  return { prob, logits };
}
const top2 = (p: Float32Array): [number, number] => {
  const idx = [...p.keys()].sort((a, b) => p[b]! - p[a]!);
  return [idx[0]!, idx[1]!];
};
const cat = (xs: Float32Array[]): Float32Array => {
  const out = new Float32Array(xs.length * K);
  xs.forEach((x, i) => {
    out.set(x, i * K);
  });
  return out;
};

const ref = await run(fp32);
for (const method of ['minmax', 'percentile', 'entropy'] as CalibrationMethod[]) {
  const q = await run(path.join(work, `tiny-cnn.int8-${method}.onnx`));
  console.log(
    `\n== ${method}: prob SQNR ${sqnrDb(cat(ref.prob), cat(q.prob)).toFixed(2)} dB, logits SQNR ${sqnrDb(cat(ref.logits), cat(q.logits)).toFixed(2)} dB`,
  );
  // Error energy per image, largest first.
  const err = ref.prob.map((r, i) => {
    let e = 0;
    for (let k = 0; k < K; k++) e += (r[k]! - q.prob[i]![k]!) ** 2;
    return { i, e };
  });
  const total = err.reduce((a, b) => a + b.e, 0);
  err.sort((a, b) => b.e - a.e);
  const share = (n: number): string => ((100 * err.slice(0, n).reduce((a, b) => a + b.e, 0)) / total).toFixed(0);
  console.log(`   prob error energy: top 1 image ${share(1)} %, top 5 images ${share(5)} %, top 10 ${share(10)} %`);
  const worst = err.slice(0, 5).map(({ i }) => i);
  for (let i = 0; i < inputs.length; i++) {
    const [a1, a2] = top2(ref.prob[i]!);
    const [b1] = top2(q.prob[i]!);
    if (a1 !== b1 || worst.includes(i)) {
      console.log(
        `   ${a1 !== b1 ? 'FLIP ' : 'worst'} ${path.basename(evl.files[i]!)}: FP32 ${CLASSES[a1]} ${ref.prob[i]![a1]!.toFixed(3)} / ${CLASSES[a2]} ${ref.prob[i]![a2]!.toFixed(3)}` +
          ` → INT8 ${CLASSES[b1]} ${q.prob[i]![b1]!.toFixed(3)} (FP32 class gets ${q.prob[i]![a1]!.toFixed(3)}); label ${CLASSES[evl.labels[i]!]}`,
      );
    }
  }
}

console.log('\n== minmax variants (evaluateModels on the eval set)');
for (const v of [
  { label: 'default', poolRewrite: true, shareConcatParams: true },
  { label: 'no avg-pool swap', poolRewrite: false, shareConcatParams: true },
  { label: 'no Concat sharing', poolRewrite: true, shareConcatParams: false },
  { label: 'neither', poolRewrite: false, shareConcatParams: false },
]) {
  const out = path.join(work, `variant-${v.label.replace(/\W+/g, '-')}.onnx`);
  const rep = await quantizeModel({
    input: fp32,
    output: out,
    calibration: { images: cal.files },
    method: 'minmax',
    poolRewrite: v.poolRewrite,
    shareConcatParams: v.shareConcatParams,
    worstLayers: 3,
  });
  const ev = await evaluateModels({ ref: fp32, cand: out, images: evl.files, repeats: 1, sessionOptions: opts });
  console.log(
    `   ${v.label.padEnd(18)} top1 ${(100 * ev.top1Agreement).toFixed(1)} %, SQNR ${ev.sqnrDb.toFixed(2)} dB, worst layers ${rep.worstLayers.map((l) => `${l.tensor} ${l.sqnrDb.toFixed(1)}`).join(', ')}`,
  );
}
