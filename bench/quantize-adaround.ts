/**
 * Measurement: AdaRound (src/model/quantize/adaround.ts) on Inception V2-sized layers — time per
 * layer, memory, and the output error against round-to-nearest, on the pool it learned from and on
 * held-out images.
 *
 * Layers: a 3×3 conv 192→64 at 28×28 (synthetic weights, the real input of inception_3a), the
 * built model's largest convs (inception_4e/double_3x3_2, 256→256 stride 2 to 7×7; inception_5b/3x3,
 * 192→320 at 7×7; BN folded) and its largest layer (the classifier Gemm fc, 1024→1000). Inputs are the float network's activations on the sample
 * images (models/samples) and their mirror images: samples 1–6 (+ mirrors) for AdaRound, 7–8 (+
 * mirrors) held out.
 *
 * Build and run (no tsx in the project; the built model is written to tmp/ if missing):
 *   npx tsc -p bench/tsconfig.quantize.json --outDir tmp/qbench && node tmp/qbench/bench/quantize-adaround.js
 *     [--iterations N] [--batch N] [--lr X] [--activation relu|none] [--layers conv192to64,inception_4e/double_3x3_2,inception_5b/3x3,fc]
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { writeBuiltModel } from '../src/model/build.js';
import { loadManifest } from '../src/model/manifest.js';
import {
  attrInt,
  attrInts,
  DataType,
  encodeModel,
  loadModel,
  makeModel,
  makeNode,
  makeTensor,
  makeValueInfo,
  onnx,
  tensorToFloat32,
} from '../src/model/onnx.js';
import { ADAROUND_DEFAULTS, adaroundLayer, layerWeightParams, type AdaroundLayerSpec } from '../src/model/quantize/adaround.js';
import { createSession, withExtraOutputs } from '../src/model/quantize/calibrate.js';
import { activationParams, type WeightScheme } from '../src/model/quantize/numeric.js';
import { prepareModel } from '../src/model/quantize/prepare.js';
import { mulberry32 } from '../src/util/index.js';
import { createPreprocessor } from '../src/vision/index.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}
const ITERATIONS = Number(arg('iterations', String(ADAROUND_DEFAULTS.iterations)));
const BATCH = Number(arg('batch', String(ADAROUND_DEFAULTS.batchSize)));
const LEARNING_RATE = Number(arg('lr', String(ADAROUND_DEFAULTS.learningRate)));
const ACTIVATION = arg('activation', 'relu') as 'relu' | 'none';
const LAYERS = arg('layers', 'conv192to64,inception_4e/double_3x3_2,inception_5b/3x3,fc').split(',');
const SCHEME: WeightScheme = { type: 'int8', symmetric: true, perChannel: true };
const root = process.cwd();
const modelPath = path.join(root, 'tmp', 'ib.onnx');

interface Layer {
  name: string;
  spec: AdaroundLayerSpec;
  weights: Float32Array;
  dims: number[];
  bias: Float32Array;
  inputName: string;
  /** [C, H, W] for a conv input, [K] for a Gemm's */
  inputDims: number[];
}

/** One-node ORT session computing the layer with float weights (for held-out errors). */
async function runLayer(layer: Layer, weights: Float32Array, inputs: Float32Array[]): Promise<Float32Array[]> {
  const isConv = layer.spec.op === 'Conv';
  const attrs: Record<string, number | number[]> = isConv
    ? {
        kernel_shape: layer.dims.slice(2),
        pads: [...((layer.spec as { pads?: number[] }).pads ?? [0, 0, 0, 0])],
        strides: [...((layer.spec as { strides?: number[] }).strides ?? [1, 1])],
      }
    : { transB: 1 };
  const graph = onnx.GraphProto.create({
    name: 'layer',
    node: [makeNode(isConv ? 'Conv' : 'Gemm', ['x', 'w', 'b'], ['y'], attrs)],
    initializer: [makeTensor('w', DataType.FLOAT, layer.dims, weights), makeTensor('b', DataType.FLOAT, [layer.bias.length], layer.bias)],
    input: [makeValueInfo('x', DataType.FLOAT, [1, ...layer.inputDims])],
    output: [makeValueInfo('y', DataType.FLOAT, [])],
  });
  const session = await ort.InferenceSession.create(encodeModel(makeModel({ graph, opset: 13 })), { logSeverityLevel: 3 });
  const out: Float32Array[] = [];
  for (const x of inputs) {
    const r = await session.run({ x: new ort.Tensor('float32', x, [1, ...layer.inputDims]) });
    // The convs are followed by a Relu (folded by the quantizer), the classifier by the Softmax.
    out.push(Float32Array.from(r.y!.data as Float32Array, (v) => (isConv ? Math.max(v, 0) : v)));
  }
  await session.release();
  return out;
}

function mse(a: Float32Array[], b: Float32Array[]): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < a[i]!.length; j++) {
      const d = a[i]![j]! - b[i]![j]!;
      s += d * d;
      n++;
    }
  }
  return s / n;
}

async function main(): Promise<void> {
  if (!existsSync(modelPath)) await writeBuiltModel(modelPath);
  const prepared = prepareModel(await loadModel(modelPath)).model;
  const manifest = await loadManifest(`${modelPath}.json`);
  const pre = createPreprocessor(manifest.input);
  const sampleDir = path.join(root, 'models', 'samples');
  const files = (await readdir(sampleDir)).filter((f) => f.endsWith('.jpg')).sort();
  const size = manifest.input.width;
  const images: Float32Array[] = [];
  for (const f of files) images.push(Float32Array.from((await pre(await readFile(path.join(sampleDir, f)))).tensor.data));
  const mirrored = images.map((img) => {
    const out = new Float32Array(img.length);
    for (let row = 0; row < img.length / size; row++) for (let x = 0; x < size; x++) out[row * size + x] = img[row * size + size - 1 - x]!;
    return out;
  });
  const g = prepared.graph!;
  const init = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  const nodes = new Map((g.node ?? []).map((n) => [n.name!, n]));
  const layers: Layer[] = [];
  for (const name of LAYERS) {
    if (name === 'conv192to64') {
      // Synthetic 3×3 weights (He init, per-channel gains as BN folding leaves them) on the real 28×28×192 input.
      const rand = mulberry32(7);
      const w = new Float32Array(64 * 192 * 9);
      const std = Math.sqrt(2 / (192 * 9));
      for (let m = 0; m < 64; m++) {
        const gain = 0.5 + rand();
        for (let i = 0; i < 192 * 9; i++)
          w[m * 1728 + i] = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()) * std * gain;
      }
      const bias = Float32Array.from({ length: 64 }, () => (rand() - 0.5) * 0.2);
      layers.push({
        name,
        spec: { op: 'Conv', inputShape: [192, 28, 28], pads: [1, 1, 1, 1] },
        weights: w,
        dims: [64, 192, 3, 3],
        bias,
        inputName: 'pool2/3x3_s2',
        inputDims: [192, 28, 28],
      });
      continue;
    }
    const n = nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    const wt = init.get(n.input![1]!)!;
    const dims = (wt.dims ?? []).map(Number);
    const bias = tensorToFloat32(init.get(n.input![2]!)!);
    if (n.opType === 'Conv') {
      const pads = attrInts(n, 'pads', [0, 0, 0, 0]) as [number, number, number, number];
      const strides = attrInts(n, 'strides', [1, 1]) as [number, number];
      layers.push({
        name,
        spec: { op: 'Conv', inputShape: [0, 0, 0], pads, strides },
        weights: tensorToFloat32(wt),
        dims,
        bias,
        inputName: n.input![0]!,
        inputDims: [],
      });
    } else {
      layers.push({
        name,
        spec: { op: 'Gemm', transB: attrInt(n, 'transB', 0) === 1 },
        weights: tensorToFloat32(wt),
        dims,
        bias,
        inputName: n.input![0]!,
        inputDims: [],
      });
    }
  }
  // The layers' float inputs on every image, from one session with extra outputs.
  const session = await createSession(
    withExtraOutputs(
      prepared,
      layers.map((l) => l.inputName),
    ),
  );
  const feeds = [...images, ...mirrored];
  const acts = new Map<string, { data: Float32Array; dims: number[] }[]>();
  for (const x of feeds) {
    const r = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, [1, 3, size, size]) });
    for (const l of layers) {
      const t = r[l.inputName]!;
      const list = acts.get(l.inputName) ?? [];
      list.push({ data: Float32Array.from(t.data as Float32Array), dims: t.dims.map(Number) });
      acts.set(l.inputName, list);
    }
  }
  await session.release();
  const trainIdx = [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13];
  const heldIdx = [6, 7, 14, 15];
  console.log(
    `AdaRound bench: iterations ${ITERATIONS}, batch ${BATCH}, learning rate ${LEARNING_RATE}, maxPatches ${ADAROUND_DEFAULTS.maxPatches}, reconstructing ${ACTIVATION === 'relu' ? 'relu(Wx + b)' : 'Wx + b'} (convs; the Gemm: Wx + b) — held-out errors after the convs' Relu, ${SCHEME.type} per-channel symmetric; ${trainIdx.length} train / ${heldIdx.length} held-out images`,
  );
  for (const l of layers) {
    const all = acts.get(l.inputName)!;
    const dims = all[0]!.dims.slice(1);
    l.inputDims = dims;
    if (l.spec.op === 'Conv') l.spec = { ...l.spec, inputShape: dims as [number, number, number] };
    const inputs = trainIdx.map((i) => all[i]!.data);
    const held = heldIdx.map((i) => all[i]!.data);
    let mx = 0;
    for (const x of inputs) for (const v of x) mx = Math.max(mx, v);
    const inputScale = activationParams({ min: 0, max: mx }, 'uint8').scale;
    const axis = l.spec.op === 'Conv' || (l.spec.op === 'Gemm' && l.spec.transB) ? 0 : 1;
    const { scales, zeroPoints } = layerWeightParams(l.weights, l.dims, axis, SCHEME, { bias: l.bias, inputScale });
    const common = {
      layer: l.spec,
      weights: l.weights,
      weightDims: l.dims,
      bias: l.bias,
      scheme: SCHEME,
      scales,
      zeroPoints,
      inputs,
      activation: l.spec.op === 'Conv' ? ACTIVATION : ('none' as const),
    };
    const cpuNearest0 = process.cpuUsage();
    const nearest = await adaroundLayer({ ...common, options: { iterations: 0 } });
    const cpuNearest = process.cpuUsage(cpuNearest0);
    const heapBefore = process.memoryUsage();
    const cpu0 = process.cpuUsage();
    const res = await adaroundLayer({ ...common, options: { iterations: ITERATIONS, batchSize: BATCH, learningRate: LEARNING_RATE } });
    const cpu = process.cpuUsage(cpu0);
    const heapAfter = process.memoryUsage();
    const dequant = (q: Int8Array | Uint8Array): Float32Array => {
      const per = l.weights.length / scales.length;
      return Float32Array.from(q, (v, i) => v * scales[axis === 0 ? Math.floor(i / per) : i % scales.length]!);
    };
    // Round-to-nearest's error on the training images through ORT: checks the pool's initialMse.
    const trainNearestMse = mse(await runLayer(l, dequant(nearest.data), inputs), await runLayer(l, l.weights, inputs));
    const floatOut = await runLayer(l, l.weights, held);
    const nearestOut = await runLayer(l, dequant(nearest.data), held);
    const adaOut = await runLayer(l, dequant(res.data), held);
    const s = res.stats;
    // CPU time, not wall time: the machine may be shared. The setup and the two MSE passes are what iterations 0 costs.
    const cpuMs = (cpu.user + cpu.system) / 1000;
    const setupCpuMs = (cpuNearest.user + cpuNearest.system) / 1000;
    const perIter = (cpuMs - setupCpuMs) / Math.max(1, s.iterations);
    console.log(
      JSON.stringify({
        layer: l.name,
        weights: s.weights,
        patchLength: (l.weights.length / l.dims[0]!) * (l.spec.op === 'Conv' ? (l.spec.group ?? 1) : 1),
        patches: s.patches,
        iterations: s.iterations,
        batch: BATCH,
        timeMs: Math.round(s.timeMs),
        cpuMs: Math.round(cpuMs),
        setupCpuMs: Math.round(setupCpuMs),
        cpuMsPerIteration: Number(perIter.toFixed(2)),
        memoryBytes: s.memoryBytes,
        rssGrowthMB: Number(((heapAfter.rss - heapBefore.rss) / 2 ** 20).toFixed(1)),
        trainNearestMseOrt: trainNearestMse,
        poolMse: { nearest: s.initialMse, adaround: s.learnedMse, ratio: Number((s.learnedMse / s.initialMse).toFixed(3)) },
        heldOutMse: {
          nearest: mse(nearestOut, floatOut),
          adaround: mse(adaOut, floatOut),
          ratio: Number((mse(adaOut, floatOut) / mse(nearestOut, floatOut)).toFixed(3)),
        },
        changed: s.changed,
        keptNearest: s.keptNearest,
      }),
    );
  }
}

await main();
