/**
 * Benchmark: quantize the built Inception V2 (224, seed 1) with each calibration method and
 * compare with FP32 as the daemon runs it (2 threads, no spinning, optimization 'all'), plus an
 * ORT profile split by op type before/after the avg-pool rewrite.
 *
 * Build and run (no tsx in the project):
 *   npx tsc -p bench/tsconfig.quantize.json && node node_modules/.cache/qbench/bench/quantize-inception.js [--images N] [--repeats N]
 * Images are synthetic (sharp-generated smooth colour fields + noise), so agreement numbers are a
 * check of the quantizer's fidelity, not of accuracy on real photographs.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import * as ort from 'onnxruntime-node';
import { writeBuiltModel } from '../src/model/build.js';
import { sessionOptionsFor } from '../src/inference/session-options.js';
import { evaluateModels } from '../src/model/eval.js';
import { quantizeModel } from '../src/model/quantize/index.js';

// The daemon's session options for its defaults (2 threads, no spinning, optimization 'all', cpu).
const DAEMON_SESSION_OPTIONS = sessionOptionsFor(
  { modelPath: '', executionProviders: ['cpu'], threads: 2, allowSpinning: false, graphOptimizationLevel: 'all' },
  'cpu',
);

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

/** Smooth random colour fields with edges and noise: activations spread like photos', roughly. */
async function writeImages(dir: string, n: number, seed: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  let s = seed >>> 0;
  const rnd = (): number => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const files: string[] = [];
  for (let k = 0; k < n; k++) {
    const w = 320;
    const h = 240;
    const buf = Buffer.alloc(w * h * 3);
    const waves = Array.from({ length: 9 }, () => ({ fx: rnd() * 0.08, fy: rnd() * 0.08, ph: rnd() * 6.28, a: 30 + rnd() * 60 }));
    const cx = rnd() * w;
    const cy = rnd() * h;
    const r = 30 + rnd() * 80;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
        for (let c = 0; c < 3; c++) {
          const wv = waves[c * 3 + (inside ? 1 : 0)]!;
          const v = 128 + wv.a * Math.sin(wv.fx * x + wv.fy * y + wv.ph) + (rnd() - 0.5) * 30;
          buf[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
        }
      }
    }
    const file = path.join(dir, `img${String(k).padStart(3, '0')}.jpg`);
    await writeFile(
      file,
      await sharp(buf, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer(),
    );
    files.push(file);
  }
  return files;
}

/** Mean ms per run by op type from an ORT profile. */
async function profileByOp(model: string, input: ort.Tensor, runs: number, prefix: string): Promise<Record<string, number>> {
  const s = await ort.InferenceSession.create(model, { ...DAEMON_SESSION_OPTIONS, enableProfiling: true, profileFilePrefix: prefix });
  const feed = { [s.inputNames[0]!]: input };
  await s.run(feed);
  for (let i = 0; i < runs; i++) await s.run(feed);
  s.endProfiling();
  await s.release();
  const dir = path.dirname(prefix);
  // ORT appends a timestamp to the prefix; prefixes here never prefix one another (they end in '.').
  const file = (await import('node:fs')).readdirSync(dir).find((f) => f.startsWith(path.basename(prefix)) && f.endsWith('.json'));
  const events = JSON.parse(await readFile(path.join(dir, file!), 'utf8')) as {
    cat: string;
    name: string;
    dur: number;
    args?: { op_name?: string };
  }[];
  const byOp: Record<string, number> = {};
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    byOp[e.args.op_name] = (byOp[e.args.op_name] ?? 0) + e.dur / 1000 / (runs + 1);
  }
  return Object.fromEntries(
    Object.entries(byOp)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => [k, +v.toFixed(2)]),
  );
}

const work = path.join(os.tmpdir(), 'inceptiond-quantize-bench');
await rm(work, { recursive: true, force: true });
await mkdir(work, { recursive: true });
const nCal = arg('images', 32);
const nEval = arg('eval', 16);
const repeats = arg('repeats', 5);
const fp32 = path.join(work, 'inception-v2.onnx');
await writeBuiltModel(fp32, { seed: 1 });
const calibration = await writeImages(path.join(work, 'cal'), nCal, 1);
const evalImages = await writeImages(path.join(work, 'eval'), nEval, 2);
console.log(`built ${fp32}; ${nCal} calibration images, ${nEval} eval images, ${repeats} repeats, ${os.cpus().length} cpus`);

const variants: { label: string; method: 'minmax' | 'percentile' | 'entropy'; poolRewrite: boolean; shareConcatParams?: boolean }[] = [
  { label: 'minmax-norewrite', method: 'minmax', poolRewrite: false, shareConcatParams: false },
  { label: 'minmax-noconcatshare', method: 'minmax', poolRewrite: true, shareConcatParams: false },
  { label: 'minmax', method: 'minmax', poolRewrite: true },
  { label: 'percentile', method: 'percentile', poolRewrite: true },
  { label: 'entropy', method: 'entropy', poolRewrite: true },
];
const results: Record<string, unknown>[] = [];
for (const v of variants) {
  const out = path.join(work, `int8-${v.label}.onnx`);
  const t0 = performance.now();
  const rep = await quantizeModel({
    input: fp32,
    output: out,
    calibration: { images: calibration },
    method: v.method,
    poolRewrite: v.poolRewrite,
    shareConcatParams: v.shareConcatParams,
  });
  const quantizeS = (performance.now() - t0) / 1000;
  const ev = await evaluateModels({ ref: fp32, cand: out, images: evalImages, repeats, sessionOptions: DAEMON_SESSION_OPTIONS });
  const row = {
    variant: v.label,
    quantizeS: +quantizeS.toFixed(1),
    ...ev,
    worstLayerDb: +(rep.worstLayers[0]?.sqnrDb ?? NaN).toFixed(1),
    sizeMB: +(rep.sizeBytes.after / 1e6).toFixed(1),
  };
  results.push(row);
  console.log(JSON.stringify(row));
}

/**
 * All models timed in one interleaved loop (round-robin, order rotating each round), so the
 * ratios between them see the same machine load. Median ms per run.
 */
async function interleavedLatency(files: Record<string, string>, inputs: ort.Tensor[], rounds: number): Promise<Record<string, number>> {
  const labels = Object.keys(files);
  const sessions = await Promise.all(labels.map((l) => ort.InferenceSession.create(files[l]!, DAEMON_SESSION_OPTIONS)));
  const times: number[][] = labels.map(() => []);
  for (const s of sessions) await s.run({ [s.inputNames[0]!]: inputs[0]! });
  for (let r = 0; r < rounds; r++) {
    for (const x of inputs) {
      for (let k = 0; k < labels.length; k++) {
        const i = (k + r) % labels.length;
        const s = sessions[i]!;
        const t0 = performance.now();
        await s.run({ [s.inputNames[0]!]: x });
        times[i]!.push(performance.now() - t0);
      }
    }
  }
  for (const s of sessions) await s.release();
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  return Object.fromEntries(labels.map((l, i) => [l, med(times[i]!)]));
}

const pre = (await import('../src/vision/index.js')).createPreprocessor((await import('../src/model/build.js')).builtInputSpec());
const input = new ort.Tensor('float32', (await pre(await readFile(evalImages[0]!))).tensor.data, [1, 3, 224, 224]);
for (const [label, file] of [
  ['fp32', fp32],
  ['int8-minmax-norewrite', path.join(work, 'int8-minmax-norewrite.onnx')],
  ['int8-minmax-noconcatshare', path.join(work, 'int8-minmax-noconcatshare.onnx')],
  ['int8-minmax', path.join(work, 'int8-minmax.onnx')],
] as const) {
  const byOp = await profileByOp(file, input, 20, path.join(work, `profile-${label}.`));
  const total = Object.values(byOp).reduce((a, b) => a + b, 0);
  console.log(`profile ${label}: total ${total.toFixed(2)} ms/run`, JSON.stringify(byOp));
}

const evalInputs = await Promise.all(
  evalImages.slice(0, 4).map(async (f) => new ort.Tensor('float32', (await pre(await readFile(f))).tensor.data, [1, 3, 224, 224])),
);
const lat = await interleavedLatency(
  Object.fromEntries([['fp32', fp32], ...variants.map((v) => [v.label, path.join(work, `int8-${v.label}.onnx`)] as const)]),
  evalInputs,
  arg('rounds', 15),
);
console.log('interleaved median ms:', JSON.stringify(Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, +v.toFixed(2)]))));
console.log('ratio to fp32:', JSON.stringify(Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, +(v / lat.fp32!).toFixed(3)]))));
