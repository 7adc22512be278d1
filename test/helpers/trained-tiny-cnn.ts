/**
 * A small version of the tiny CNN that scripts/train-tiny-cnn.ts trains (same data generator,
 * network, trainer and export), trained deterministically for tests and cached under the
 * git-ignored tmp/: the cache folder's name is a hash of the training code and options, so a change
 * to either trains again. Concurrent test files may train at once: each trains into its own temp
 * folder and renames it into place; the first rename wins.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { createPreprocessor } from '../../src/vision/index.js';
import { writeSplit } from '../../scripts/train-tiny-cnn/data.js';
import { exportTrained, INPUT_SPEC, PLANE, trainTinyCnn } from '../../scripts/train-tiny-cnn/train.js';
import { root } from './build.js';

export interface TrainedTinyCnnOptions {
  seed?: number;
  trainImages?: number;
  epochs?: number;
  calibrationImages?: number;
  evalImages?: number;
}

export interface TrainedTinyCnn {
  /** the FP32 model, its manifest beside it */
  modelPath: string;
  calibration: { dir: string; files: string[]; labels: number[]; tensors: Float32Array[] };
  /** held out: never trained or calibrated on */
  eval: { dir: string; files: string[]; labels: number[]; tensors: Float32Array[] };
  /** [1, 3, 32, 32] */
  inputDims: number[];
}

const DEFAULTS: Required<TrainedTinyCnnOptions> = { seed: 3, trainImages: 600, epochs: 6, calibrationImages: 32, evalImages: 48 };

/** Everything the result depends on: the files that generate the data, train and export, and the options. */
async function cacheKey(opts: Required<TrainedTinyCnnOptions>): Promise<string> {
  const hash = createHash('sha256').update(JSON.stringify(opts));
  const sources = [
    'scripts/train-tiny-cnn/data.ts',
    'scripts/train-tiny-cnn/nn.ts',
    'scripts/train-tiny-cnn/model.ts',
    'scripts/train-tiny-cnn/train.ts',
    'test/helpers/trained-tiny-cnn.ts',
  ];
  for (const s of sources) hash.update(await readFile(path.join(root, s)));
  return hash.digest('hex').slice(0, 16);
}

async function tensorsOf(files: string[]): Promise<Float32Array[]> {
  const pre = createPreprocessor(INPUT_SPEC);
  const out: Float32Array[] = [];
  for (const f of files) out.push((await pre(await readFile(f))).tensor.data);
  return out;
}

/** The trained model and its image sets, trained on first use (about 25 s on one core; 42 % eval accuracy over 10 classes) and then read from tmp/. */
export async function trainedTinyCnn(options: TrainedTinyCnnOptions = {}): Promise<TrainedTinyCnn> {
  const opts = { ...DEFAULTS, ...options };
  const base = path.join(root, 'tmp', 'trained-tiny-cnn');
  const dir = path.join(base, await cacheKey(opts));
  const modelPath = path.join(dir, 'tiny-cnn.onnx');
  // The seeds differ per split so no image is in two of them.
  const splits = {
    calibration: { dir: path.join(dir, 'cal'), count: opts.calibrationImages, seed: opts.seed * 1000 + 2 },
    eval: { dir: path.join(dir, 'eval'), count: opts.evalImages, seed: opts.seed * 1000 + 3 },
  };
  if (!existsSync(`${modelPath}.json`)) {
    await mkdir(base, { recursive: true });
    const work = `${dir}.${process.pid}.tmp`;
    await rm(work, { recursive: true, force: true });
    const train = await writeSplit({ dir: path.join(work, 'train'), count: opts.trainImages, seed: opts.seed * 1000 + 1 });
    const x = new Float32Array(train.files.length * PLANE);
    (await tensorsOf(train.files)).forEach((t, i) => {
      x.set(t, i * PLANE);
    });
    const model = trainTinyCnn(x, train.labels, { seed: opts.seed, epochs: opts.epochs, batch: 32, learningRate: 3e-3, warmupSteps: 20 });
    for (const s of Object.values(splits)) await writeSplit({ ...s, dir: path.join(work, path.basename(s.dir)) });
    await exportTrained(model, path.join(work, 'tiny-cnn.onnx'), `test/helpers/trained-tiny-cnn.ts ${JSON.stringify(opts)}`);
    await rm(path.join(work, 'train'), { recursive: true, force: true });
    await rename(work, dir).catch(async (err: NodeJS.ErrnoException) => {
      // another test file finished first: its copy is the same model
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      await rm(work, { recursive: true, force: true });
    });
  }
  const result = {} as Pick<TrainedTinyCnn, 'calibration' | 'eval'>;
  for (const [name, s] of Object.entries(splits) as [keyof typeof splits, (typeof splits)['eval']][]) {
    const { files, labels } = await writeSplit(s); // reads the stamp: no drawing when the folder is whole
    result[name] = { dir: s.dir, files, labels, tensors: await tensorsOf(files) };
  }
  return { modelPath, ...result, inputDims: [1, 3, INPUT_SPEC.height, INPUT_SPEC.width] };
}
