/**
 * Evidence for the quantizer on TRAINED weights, fully offline and seeded:
 *   1. generates a labelled JPEG set with sharp (10 classes = 5 shapes × warm/cool colour, random
 *      position, size, rotation, background gradient and noise): train / calibration / eval folders;
 *   2. trains a small plain CNN (Conv, BatchNormalization, Relu, MaxPool, AveragePool, Concat,
 *      GlobalAveragePool, Flatten, Gemm, Softmax) in plain TypeScript, on tensors made by the
 *      daemon's own preprocessor (createPreprocessor with the manifest's input spec);
 *   3. exports it as ONNX (opset 13) with its manifest and labels, and checks with onnxruntime-node
 *      that the ONNX model's eval accuracy equals the trainer's;
 *   4. quantizes it with each calibration method (quantizeModel) and compares FP32 vs INT8 on the
 *      eval folder (evaluateModels, with the daemon's session options) plus accuracy of each.
 *
 * Build and run (no tsx in the project; output goes to tmp/trained-cnn/, git-ignored):
 *   npx tsc -p scripts/train-tiny-cnn/tsconfig.json && node node_modules/.cache/train-tiny-cnn/scripts/train-tiny-cnn.js
 * Options: --epochs N (default 12)  --train N (train images, default 3000)  --seed N (default 1)
 *          --reuse (skip training when tmp/trained-cnn/tiny-cnn.onnx exists)  --worst N (layers listed per method)
 * The quantization / eval step can be repeated by hand with the CLI (after npm run build):
 *   node dist/cli.js model quantize tmp/trained-cnn/tiny-cnn.onnx tmp/trained-cnn/q.onnx --calibration tmp/trained-cnn/cal --method minmax
 *   node dist/cli.js model eval tmp/trained-cnn/tiny-cnn.onnx tmp/trained-cnn/q.onnx --images tmp/trained-cnn/eval --json
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { sessionOptionsFor } from '../src/inference/session-options.js';
import { evaluateModels } from '../src/model/eval.js';
import { quantizeModel, type CalibrationMethod } from '../src/model/quantize/index.js';
import { createPreprocessor } from '../src/vision/index.js';
import { CLASSES, writeSplit } from './train-tiny-cnn/data.js';
import { INPUT_SIZE } from './train-tiny-cnn/model.js';
import { accuracy, argmax, exportTrained, INPUT_SPEC, PLANE, predict, trainTinyCnn } from './train-tiny-cnn/train.js';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

const SEED = arg('seed', 1);
const EPOCHS = arg('epochs', 12);
const N_TRAIN = arg('train', 3000);
const N_CAL = 64;
const N_EVAL = 200;
const BATCH = 32;
const LR = 3e-3;

/** The repository root: the nearest parent of this (compiled) file whose package.json is inceptiond's. */
function repoRoot(): string {
  for (let d = path.dirname(fileURLToPath(import.meta.url)); d !== path.dirname(d); d = path.dirname(d)) {
    const pkg = path.join(d, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'inceptiond') return d;
  }
  throw new Error('cannot find the inceptiond repository root above this script');
}
const work = path.join(repoRoot(), 'tmp', 'trained-cnn');
const fp32Path = path.join(work, 'tiny-cnn.onnx');

const DAEMON_SESSION_OPTIONS = sessionOptionsFor(
  { modelPath: '', executionProviders: ['cpu'], threads: 2, allowSpinning: false, graphOptimizationLevel: 'all' },
  'cpu',
);

const t00 = performance.now();
const secs = (): string => `${((performance.now() - t00) / 1000).toFixed(1)}s`;

// 1. Data.
const train = await writeSplit({ dir: path.join(work, 'train'), count: N_TRAIN, seed: SEED * 1000 + 1 });
const cal = await writeSplit({ dir: path.join(work, 'cal'), count: N_CAL, seed: SEED * 1000 + 2 });
const evl = await writeSplit({ dir: path.join(work, 'eval'), count: N_EVAL, seed: SEED * 1000 + 3 });
console.log(
  `[${secs()}] data: ${train.files.length} train, ${cal.files.length} calibration, ${evl.files.length} eval images (${CLASSES.length} classes) in ${work}`,
);

const pre = createPreprocessor(INPUT_SPEC);
async function load(files: string[]): Promise<Float32Array> {
  const all = new Float32Array(files.length * PLANE);
  for (let i = 0; i < files.length; i++) all.set((await pre(await readFile(files[i]!))).tensor.data, i * PLANE);
  return all;
}
const xTrain = await load(train.files);
const xEval = await load(evl.files);
console.log(`[${secs()}] preprocessed with the manifest spec ${JSON.stringify(INPUT_SPEC)}`);

// 2. Train (or reuse).
let trainerEvalProbs: Float32Array | undefined;
if (flag('reuse') && existsSync(fp32Path)) {
  console.log(`[${secs()}] --reuse: keeping ${fp32Path}`);
} else {
  const model = trainTinyCnn(xTrain, train.labels, {
    seed: SEED,
    epochs: EPOCHS,
    batch: BATCH,
    learningRate: LR,
    onEpoch: (e) => {
      const evalAcc = accuracy(predict(e.model, xEval, evl.files.length), evl.labels);
      console.log(
        `[${secs()}] epoch ${e.epoch}/${EPOCHS}: loss ${e.loss.toFixed(4)}, train acc ${(100 * e.trainAccuracy).toFixed(1)} %, ` +
          `eval acc ${(100 * evalAcc).toFixed(1)} % (${e.seconds.toFixed(1)} s)`,
      );
    },
  });
  trainerEvalProbs = predict(model, xEval, evl.files.length);

  // 3. Export with manifest and labels.
  await exportTrained(
    model,
    fp32Path,
    `Trained by scripts/train-tiny-cnn.ts (seed ${SEED}, ${EPOCHS} epochs, ${N_TRAIN} images) on sharp-drawn shapes: ${CLASSES.join(', ')}.`,
  );
  console.log(`[${secs()}] exported ${fp32Path} (+ .json manifest, labels.txt)`);
}

// ORT check of the exported model on the eval set (plain session: this is a correctness check).
async function ortProbs(file: string, x: Float32Array, n: number): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(file, DAEMON_SESSION_OPTIONS);
  const out = new Float32Array(n * CLASSES.length);
  try {
    for (let i = 0; i < n; i++) {
      const feed = { [s.inputNames[0]!]: new ort.Tensor('float32', x.slice(i * PLANE, (i + 1) * PLANE), [1, 3, INPUT_SIZE, INPUT_SIZE]) };
      out.set((await s.run(feed))[s.outputNames[0]!]!.data as Float32Array, i * CLASSES.length);
    }
  } finally {
    await s.release();
  }
  return out;
}
const fp32Probs = await ortProbs(fp32Path, xEval, evl.files.length);
const fp32Acc = accuracy(fp32Probs, evl.labels);
if (trainerEvalProbs) {
  let maxDiff = 0;
  let disagree = 0;
  for (let i = 0; i < fp32Probs.length; i++) maxDiff = Math.max(maxDiff, Math.abs(fp32Probs[i]! - trainerEvalProbs[i]!));
  for (let s = 0; s < evl.files.length; s++) {
    if (argmax(fp32Probs, s * CLASSES.length, CLASSES.length) !== argmax(trainerEvalProbs, s * CLASSES.length, CLASSES.length)) disagree++;
  }
  const trainerAcc = accuracy(trainerEvalProbs, evl.labels);
  console.log(
    `[${secs()}] export check: trainer eval acc ${(100 * trainerAcc).toFixed(1)} %, ONNX (ORT) eval acc ${(100 * fp32Acc).toFixed(1)} %, ` +
      `top-1 disagreements ${disagree}, max |Δprob| ${maxDiff.toExponential(2)}`,
  );
  if (trainerAcc !== fp32Acc || disagree > 0 || maxDiff > 1e-3) throw new Error('export check failed: ONNX model differs from the trainer');
} else {
  console.log(`[${secs()}] ONNX (ORT) eval acc ${(100 * fp32Acc).toFixed(1)} %`);
}

// 4. Quantize with each method and compare.
const calImages = cal.files;
const rows: Record<string, string | number>[] = [];
const details: Record<string, unknown>[] = [];
for (const method of ['minmax', 'percentile', 'entropy'] as CalibrationMethod[]) {
  const out = path.join(work, `tiny-cnn.int8-${method}.onnx`);
  const t0 = performance.now();
  const rep = await quantizeModel({
    input: fp32Path,
    output: out,
    calibration: { images: calImages },
    method,
    worstLayers: arg('worst', 100),
  });
  const qs = (performance.now() - t0) / 1000;
  const ev = await evaluateModels({ ref: fp32Path, cand: out, images: evl.files, repeats: 5, sessionOptions: DAEMON_SESSION_OPTIONS });
  const int8Acc = accuracy(await ortProbs(out, xEval, evl.files.length), evl.labels);
  rows.push({
    method,
    'acc FP32 %': +(100 * fp32Acc).toFixed(1),
    'acc INT8 %': +(100 * int8Acc).toFixed(1),
    'top1Agreement %': +(100 * ev.top1Agreement).toFixed(1),
    sqnrDb: +ev.sqnrDb.toFixed(2),
    latencyRatio: +ev.latencyRatio.toFixed(2),
    'fp32 ms': +ev.refMs.toFixed(3),
    'int8 ms': +ev.candMs.toFixed(3),
    'worst layer dB': +(rep.worstLayers[0]?.sqnrDb ?? NaN).toFixed(1),
    'quantize s': +qs.toFixed(1),
  });
  details.push({ method, eval: ev, int8Acc, report: { ...rep, tensors: rep.tensors } });
  console.log(
    `[${secs()}] ${method}: rewrites ${JSON.stringify(rep.rewrites)}, foldedRelus ${rep.foldedRelus}, floatNodes ${JSON.stringify(rep.floatNodes)}, warnings ${JSON.stringify(rep.warnings)}`,
  );
  console.log(
    `  per-layer SQNR (calibration inputs, lowest first): ${rep.worstLayers.map((l) => `${l.tensor}[${l.opType}] ${l.sqnrDb.toFixed(1)}`).join(', ')}`,
  );
}
console.log(`\nFP32 vs INT8 on ${evl.files.length} held-out images (${os.cpus().length} cpus, daemon session options, 5 timed passes):`);
console.table(rows);
await writeFile(path.join(work, 'results.json'), `${JSON.stringify({ rows, details }, null, 2)}\n`);
console.log(`[${secs()}] details in ${path.join(work, 'results.json')}`);
