/**
 * The training loop of the tiny CNN, shared by scripts/train-tiny-cnn.ts (the full run) and the test
 * helper test/helpers/trained-tiny-cnn.ts (a small, cached run): Adam, linear warm-up then cosine decay,
 * eval-mode predictions with BatchNorm running statistics, and the ONNX export with its manifest.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeManifestBeside, type ModelManifest } from '../../src/model/manifest.js';
import { saveModel } from '../../src/model/onnx.js';
import { CLASSES, rng } from './data.js';
import { exportOnnx, INPUT_NAME, INPUT_SIZE, OUTPUT_NAME, TinyCnn } from './model.js';
import { Adam, softmax, softmaxCrossEntropy, type T } from './nn.js';

/** Values per preprocessed image ([1, 3, INPUT_SIZE, INPUT_SIZE]). */
export const PLANE = 3 * INPUT_SIZE * INPUT_SIZE;

// The manifest input spec: the trainer sees exactly what the daemon's preprocessor produces.
export const INPUT_SPEC: ModelManifest['input'] = {
  name: INPUT_NAME,
  layout: 'NCHW',
  width: INPUT_SIZE,
  height: INPUT_SIZE,
  channels: 'RGB',
  scale: 1 / 255,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  resize: 'fill',
};

export interface TrainOptions {
  seed: number;
  epochs: number;
  batch: number;
  learningRate: number;
  /** steps of linear learning-rate warm-up (default 100) */
  warmupSteps?: number;
  /** told after each epoch */
  onEpoch?: (e: { epoch: number; loss: number; trainAccuracy: number; seconds: number; model: TinyCnn }) => void;
}

function batchOf(x: Float32Array, idx: ArrayLike<number>): T {
  const data = new Float32Array(idx.length * PLANE);
  for (let i = 0; i < idx.length; i++) data.set(x.subarray(idx[i]! * PLANE, (idx[i]! + 1) * PLANE), i * PLANE);
  return { data, n: idx.length, c: 3, h: INPUT_SIZE, w: INPUT_SIZE };
}

/** Eval-mode (running BN statistics) probabilities for `n` images packed in `x`. */
export function predict(model: TinyCnn, x: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * CLASSES.length);
  for (let s = 0; s < n; s += 64) {
    const idx = Array.from({ length: Math.min(64, n - s) }, (_, i) => s + i);
    out.set(softmax(model.forward(batchOf(x, idx), false)), s * CLASSES.length);
  }
  return out;
}

export function argmax(p: ArrayLike<number>, off: number, k: number): number {
  let best = 0;
  for (let i = 1; i < k; i++) if (p[off + i]! > p[off + best]!) best = i;
  return best;
}

export function accuracy(probs: Float32Array, labels: number[]): number {
  let ok = 0;
  for (let s = 0; s < labels.length; s++) if (argmax(probs, s * CLASSES.length, CLASSES.length) === labels[s]) ok++;
  return ok / labels.length;
}

/** Trains a TinyCnn on `x` (images packed, PLANE values each) and `labels`; deterministic for a seed. */
export function trainTinyCnn(x: Float32Array, labels: number[], opts: TrainOptions): TinyCnn {
  const count = labels.length;
  const rand = rng(opts.seed);
  const model = new TinyCnn(rand, CLASSES.length);
  const adam = new Adam(model.params());
  const steps = opts.epochs * Math.floor(count / opts.batch);
  let step = 0;
  const order = Array.from({ length: count }, (_, i) => i);
  for (let epoch = 1; epoch <= opts.epochs; epoch++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    let loss = 0;
    let correct = 0;
    let seen = 0;
    const t0 = performance.now();
    for (let b = 0; b + opts.batch <= count; b += opts.batch) {
      const idx = order.slice(b, b + opts.batch);
      const logits = model.forward(batchOf(x, idx), true);
      const r = softmaxCrossEntropy(
        logits,
        idx.map((i) => labels[i]!),
      );
      adam.zeroGrad();
      model.backward(r.grad);
      // Linear warm-up, then cosine decay to 0.
      const lr = opts.learningRate * Math.min(1, (step + 1) / (opts.warmupSteps ?? 100)) * 0.5 * (1 + Math.cos((Math.PI * step) / steps));
      adam.step(lr);
      step++;
      loss += r.loss * idx.length;
      correct += r.correct;
      seen += idx.length;
    }
    opts.onEpoch?.({ epoch, loss: loss / seen, trainAccuracy: correct / seen, seconds: (performance.now() - t0) / 1000, model });
  }
  return model;
}

/** Writes the model as ONNX with its manifest and labels.txt beside it. */
export async function exportTrained(model: TinyCnn, file: string, notes: string): Promise<void> {
  await saveModel(exportOnnx(model), file);
  await writeFile(path.join(path.dirname(file), 'labels.txt'), `${CLASSES.join('\n')}\n`);
  const manifest: ModelManifest = {
    name: 'tiny-cnn-shapes',
    file: path.basename(file),
    input: INPUT_SPEC,
    output: { name: OUTPUT_NAME, activation: 'softmax' },
    labels: 'labels.txt',
    precision: 'fp32',
    synthetic: false,
    notes,
  };
  await writeManifestBeside(file, manifest);
}
