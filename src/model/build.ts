/**
 * Builds the Inception V2 topology (docs/ARCHITECTURE.md, "Models and quantization") with seeded synthetic weights.
 *
 * The weights are random, so the labels it outputs mean nothing; the point is a model with the real
 * layer structure for benchmarks, quantization and tests without downloading anything.
 *
 * To keep activations in range, a small batch of generated images is pushed through the network in
 * plain JS while it is built (at reduced resolution), and every BatchNormalization's running
 * mean/variance is set to what its input actually measures, so each layer's output is normalized
 * whatever the depth. The final Gemm bias cancels the batch's mean pooled feature, so what reaches
 * the softmax is the image-dependent part.
 */
import { endianness } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DataType, asFloat, encodeModel, makeModel, makeNode, makeTensor, makeValueInfo, onnx, saveModel, type AttrValue } from './onnx.js';
import { modelsDir, writeManifestBeside, type ModelManifest } from './manifest.js';
import { mulberry32 } from '../util/index.js';

export type InceptionVariant = 'bn-inception' | 'rethinking-v2';

export interface BuildOptions {
  seed?: number;
  variant?: InceptionVariant;
  classes?: number;
}

export interface BuiltModel {
  model: onnx.ModelProto;
  params: number;
  macs: number;
  inputName: string;
  outputName: string;
  size: number;
}

export const INPUT_NAME = 'data_0';
export const OUTPUT_NAME = 'prob_1';

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

class Normal {
  private spare: number | undefined;
  constructor(private readonly uniform: () => number) {}
  next(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    // Box–Muller; 1 - u keeps log() away from 0.
    const u = 1 - this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

// ---------------------------------------------------------------------------------------------
// Graph builder with a calibration forward pass

/**
 * A tensor in the graph: its name, CHW shape in the model, and the same tensor computed in plain JS
 * for a small batch of generated calibration images (`data`: n×c×ch×cw, the same spatial size).
 */
interface Feature {
  name: string;
  c: number;
  h: number;
  w: number;
  n: number;
  ch: number;
  cw: number;
  data: Float32Array;
}

const littleEndianHost = endianness() === 'LE';

/** Initializer without copying the (large) weight buffer on little-endian hosts. */
function floatInitializer(name: string, dims: number[], values: Float32Array): onnx.TensorProto {
  if (!littleEndianHost) return makeTensor(name, DataType.FLOAT, dims, values);
  return onnx.TensorProto.create({
    name,
    dataType: DataType.FLOAT,
    dims,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  });
}

function outSize(size: number, k: number, stride: number, pad: number): number {
  return Math.floor((size + 2 * pad - k) / stride) + 1;
}

/**
 * Convolution of the calibration batch in ONNX Runtime (one tiny single-Conv session per layer):
 * native speed at full resolution, so the measured statistics are those the real graph will see.
 */
async function convolve(
  x: Feature,
  weights: Float32Array,
  outC: number,
  kh: number,
  kw: number,
  stride: number,
  padH: number,
  padW: number,
): Promise<{ data: Float32Array; oh: number; ow: number }> {
  const { n, c, ch: h, cw: w } = x;
  const oh = outSize(h, kh, stride, padH);
  const ow = outSize(w, kw, stride, padW);
  const graph = onnx.GraphProto.create({
    name: 'calibration_conv',
    node: [makeNode('Conv', ['x', 'w'], ['y'], { kernel_shape: [kh, kw], strides: [stride, stride], pads: [padH, padW, padH, padW] })],
    initializer: [floatInitializer('w', [outC, c, kh, kw], weights)],
    input: [makeValueInfo('x', DataType.FLOAT, [n, c, h, w])],
    output: [makeValueInfo('y', DataType.FLOAT, [n, outC, oh, ow])],
  });
  const session = await ort.InferenceSession.create(encodeModel(makeModel({ graph, opset: 13 })), {
    graphOptimizationLevel: 'disabled',
  });
  try {
    const result = await session.run({ x: new ort.Tensor('float32', x.data, [n, c, h, w]) });
    const y = result.y;
    if (!y) throw new Error('calibration conv produced no output');
    return { data: y.data as Float32Array, oh, ow };
  } finally {
    await session.release();
  }
}

function pool2d(x: Feature, kind: 'max' | 'avg', k: number, stride: number, pad: number): Float32Array {
  const { n, c, ch: h, cw: w } = x;
  const oh = outSize(h, k, stride, pad);
  const ow = outSize(w, k, stride, pad);
  const out = new Float32Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    const inBase = p * h * w;
    const outBase = p * oh * ow;
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let acc = kind === 'max' ? -Infinity : 0;
        let count = 0;
        for (let ky = 0; ky < k; ky++) {
          const iy = oy * stride + ky - pad;
          if (iy < 0 || iy >= h) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox * stride + kx - pad;
            if (ix < 0 || ix >= w) continue;
            const v = x.data[inBase + iy * w + ix]!;
            if (kind === 'max') acc = Math.max(v, acc);
            else acc += v;
            count++;
          }
        }
        // count_include_pad = 0, as in the ONNX node.
        out[outBase + oy * ow + ox] = kind === 'max' ? acc : acc / count;
      }
    }
  }
  return out;
}

/**
 * Smooth random colour fields with edges and stripes, roughly natural-image statistics, as pixels
 * 0–255 normalized the way the manifest says (pixel·scale − mean)/std.
 */
export function generateImages(
  seed: number,
  count: number,
  size: number,
  spec: Pick<ModelManifest['input'], 'scale' | 'mean' | 'std'>,
): Float32Array {
  const rand = mulberry32(seed ^ 0x9e3779b9);
  const plane = size * size;
  const out = new Float32Array(count * 3 * plane);
  for (let img = 0; img < count; img++) {
    const base = [rand() * 255, rand() * 255, rand() * 255];
    const grad = [rand() - 0.5, rand() - 0.5, rand() - 0.5].map((g) => g * 300);
    const freq = 0.05 + rand() * 0.6;
    const angle = rand() * Math.PI;
    const stripe = rand() * 120;
    const cx = rand() * size;
    const cy = rand() * size;
    const radius = (0.15 + rand() * 0.35) * size;
    const blob = [rand() * 255, rand() * 255, rand() * 255];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const u = x / size - 0.5;
        const v = y / size - 0.5;
        const s = Math.sin((x * Math.cos(angle) + y * Math.sin(angle)) * freq) * stripe;
        const inBlob = (x - cx) ** 2 + (y - cy) ** 2 < radius * radius;
        for (let c = 0; c < 3; c++) {
          const g = grad[c]! * (c === 1 ? v : u);
          let p = inBlob ? blob[c]! : base[c]! + g + s;
          p += (rand() - 0.5) * 20; // sensor noise
          p = Math.min(255, Math.max(0, p));
          out[(img * 3 + c) * plane + y * size + x] = (p * spec.scale - spec.mean[c]!) / spec.std[c]!;
        }
      }
    }
  }
  return out;
}

class GraphBuilder {
  readonly nodes: onnx.NodeProto[] = [];
  readonly initializers: onnx.TensorProto[] = [];
  params = 0;
  macs = 0;
  private readonly normal: Normal;
  readonly uniform: () => number;

  constructor(seed: number) {
    this.uniform = mulberry32(seed);
    this.normal = new Normal(this.uniform);
  }

  private node(op: string, inputs: string[], output: string, attrs: Record<string, AttrValue> = {}): void {
    this.nodes.push(makeNode(op, inputs, [output], attrs, output));
  }

  private addFloat(name: string, dims: number[], values: Float32Array): void {
    this.initializers.push(floatInitializer(name, dims, values));
    this.params += values.length;
  }

  /**
   * Conv (no bias) → BatchNormalization → Relu, the unit the quantizer's BN folding expects.
   * BN running mean/variance are measured on the calibration batch, so every layer's output is
   * normalized whatever the depth (random He-initialised weights alone drift by orders of magnitude).
   */
  async convBnRelu(
    x: Feature,
    name: string,
    outC: number,
    k: [number, number],
    stride = 1,
    pad: [number, number] = [Math.floor(k[0] / 2), Math.floor(k[1] / 2)],
  ): Promise<Feature> {
    const [kh, kw] = k;
    const fanIn = x.c * kh * kw;
    const std = Math.sqrt(2 / fanIn); // He init for ReLU
    const weights = new Float32Array(outC * fanIn);
    for (let i = 0; i < weights.length; i++) weights[i] = this.normal.next() * std;
    const h = outSize(x.h, kh, stride, pad[0]);
    const w = outSize(x.w, kw, stride, pad[1]);
    if (h < 1 || w < 1) throw new Error(`${name}: input ${x.h}x${x.w} too small for kernel ${kh}x${kw}`);

    const conv = await convolve(x, weights, outC, kh, kw, stride, pad[0], pad[1]);
    const plane = conv.oh * conv.ow;
    const gamma = new Float32Array(outC);
    const beta = new Float32Array(outC);
    const runMean = new Float32Array(outC);
    const runVar = new Float32Array(outC);
    for (let o = 0; o < outC; o++) {
      let sum = 0;
      let sum2 = 0;
      for (let img = 0; img < x.n; img++) {
        const base = (img * outC + o) * plane;
        for (let p = 0; p < plane; p++) {
          const v = conv.data[base + p]!;
          sum += v;
          sum2 += v * v;
        }
      }
      const count = x.n * plane;
      const mean = sum / count;
      const variance = Math.max(sum2 / count - mean * mean, 1e-4);
      // gamma ≈ 1 and a small beta; running stats as measured.
      gamma[o] = 1 + 0.2 * (this.uniform() - 0.5);
      beta[o] = 0.2 * (this.uniform() - 0.5);
      runMean[o] = mean;
      runVar[o] = variance;
      // Apply BN + ReLU to the calibration batch, exactly as ORT will (epsilon included).
      const a = gamma[o]! / Math.sqrt(variance + BN_EPSILON);
      const b = beta[o]! - mean * a;
      for (let img = 0; img < x.n; img++) {
        const base = (img * outC + o) * plane;
        for (let p = 0; p < plane; p++) {
          const y = conv.data[base + p]! * a + b;
          conv.data[base + p] = Math.max(y, 0);
        }
      }
    }

    const wName = `${name}_w`;
    this.addFloat(wName, [outC, x.c, kh, kw], weights);
    this.node('Conv', [x.name, wName], name, {
      kernel_shape: [kh, kw],
      strides: [stride, stride],
      pads: [pad[0], pad[1], pad[0], pad[1]],
    });
    this.macs += outC * h * w * fanIn;

    const bnOut = `${name}_bn`;
    this.addFloat(`${bnOut}_scale`, [outC], gamma);
    this.addFloat(`${bnOut}_bias`, [outC], beta);
    this.addFloat(`${bnOut}_mean`, [outC], runMean);
    this.addFloat(`${bnOut}_var`, [outC], runVar);
    this.node('BatchNormalization', [name, `${bnOut}_scale`, `${bnOut}_bias`, `${bnOut}_mean`, `${bnOut}_var`], bnOut, {
      epsilon: asFloat(BN_EPSILON),
    });
    const reluOut = `${name}_relu`;
    this.node('Relu', [bnOut], reluOut);
    return { name: reluOut, c: outC, h, w, n: x.n, ch: conv.oh, cw: conv.ow, data: conv.data };
  }

  pool(x: Feature, name: string, kind: 'max' | 'avg', k: number, stride: number, pad: number): Feature {
    const h = outSize(x.h, k, stride, pad);
    const w = outSize(x.w, k, stride, pad);
    // count_include_pad stays 0 (ONNX default): border averages are not diluted by zeros.
    this.node(kind === 'max' ? 'MaxPool' : 'AveragePool', [x.name], name, {
      kernel_shape: [k, k],
      strides: [stride, stride],
      pads: [pad, pad, pad, pad],
    });
    const data = pool2d(x, kind, k, stride, pad);
    return { ...x, name, h, w, ch: outSize(x.ch, k, stride, pad), cw: outSize(x.cw, k, stride, pad), data };
  }

  concat(parts: Feature[], name: string): Feature {
    const [first] = parts;
    if (!first) throw new Error(`${name}: nothing to concatenate`);
    for (const p of parts) {
      if (p.h !== first.h || p.w !== first.w || p.ch !== first.ch || p.cw !== first.cw) {
        throw new Error(`${name}: branch ${p.name} is ${p.h}x${p.w}, expected ${first.h}x${first.w}`);
      }
    }
    const c = parts.reduce((sum, p) => sum + p.c, 0);
    const plane = first.ch * first.cw;
    const data = new Float32Array(first.n * c * plane);
    for (let img = 0; img < first.n; img++) {
      let off = img * c * plane;
      for (const p of parts) {
        data.set(p.data.subarray(img * p.c * plane, (img + 1) * p.c * plane), off);
        off += p.c * plane;
      }
    }
    this.node(
      'Concat',
      parts.map((p) => p.name),
      name,
      { axis: 1 },
    );
    return { name, c, h: first.h, w: first.w, n: first.n, ch: first.ch, cw: first.cw, data };
  }

  /**
   * Global average pool → Flatten → Gemm → Softmax. The Gemm bias cancels the mean pooled feature
   * of the calibration batch (otherwise that shared component gives every image the same top-1),
   * and its weights are scaled so the logits spread over a few units: softmax neither one-hot nor uniform.
   */
  classifier(x: Feature, classes: number, outputName: string): void {
    this.node('AveragePool', [x.name], 'pool_global', { kernel_shape: [x.h, x.w], strides: [1, 1] });
    this.node('Flatten', ['pool_global'], 'pool_global_flat', { axis: 1 });
    const plane = x.ch * x.cw;
    const pooled = new Float64Array(x.n * x.c);
    for (let p = 0; p < x.n * x.c; p++) {
      let s = 0;
      for (let i = 0; i < plane; i++) s += x.data[p * plane + i]!;
      pooled[p] = s / plane;
    }
    const mean = new Float64Array(x.c);
    for (let img = 0; img < x.n; img++) for (let i = 0; i < x.c; i++) mean[i]! += pooled[img * x.c + i]! / x.n;

    const weights = new Float32Array(classes * x.c);
    for (let i = 0; i < weights.length; i++) weights[i] = this.normal.next();
    // The widest per-image spread of the centred logits sets the weight scale: high-contrast images
    // spread the logits most, and they too should not give a one-hot softmax.
    let spread = 0;
    for (let img = 0; img < x.n; img++) {
      let sum2 = 0;
      for (let k = 0; k < classes; k++) {
        let l = 0;
        for (let i = 0; i < x.c; i++) l += weights[k * x.c + i]! * (pooled[img * x.c + i]! - mean[i]!);
        sum2 += l * l;
      }
      spread = Math.max(spread, Math.sqrt(sum2 / classes));
    }
    spread ||= 1;
    const scale = TARGET_LOGIT_STD / spread;
    const bias = new Float32Array(classes);
    for (let k = 0; k < classes; k++) {
      let dot = 0;
      for (let i = 0; i < x.c; i++) {
        const wt = weights[k * x.c + i]! * scale;
        weights[k * x.c + i] = wt;
        dot += wt * mean[i]!;
      }
      bias[k] = -dot;
    }
    this.addFloat('fc_w', [classes, x.c], weights);
    this.addFloat('fc_b', [classes], bias);
    this.node('Gemm', ['pool_global_flat', 'fc_w', 'fc_b'], 'fc', { transB: 1 });
    this.macs += classes * x.c;
    this.node('Softmax', ['fc'], outputName, { axis: 1 });
  }
}

const BN_EPSILON = 1e-5;
/** Logit spread of the most spread-out calibration image: a clear but not certain top-1. */
const TARGET_LOGIT_STD = 2;

// ---------------------------------------------------------------------------------------------
// BN-Inception (Ioffe & Szegedy 2015, the zoo model's layer table)

interface BnInceptionModule {
  name: string;
  /** 0 in stride-2 modules: no 1×1 branch. */
  n1x1: number;
  n3x3red: number;
  n3x3: number;
  d3x3red: number;
  d3x3: number;
  pool: 'avg' | 'max';
  /** 0 = stride-2 module: the pool output passes through without projection. */
  proj: number;
  stride: 1 | 2;
}

/** Published BN-Inception channel counts (Ioffe & Szegedy 2015, figure 5). */
const BN_INCEPTION_MODULES: BnInceptionModule[] = [
  { name: 'inception_3a', n1x1: 64, n3x3red: 64, n3x3: 64, d3x3red: 64, d3x3: 96, pool: 'avg', proj: 32, stride: 1 },
  { name: 'inception_3b', n1x1: 64, n3x3red: 64, n3x3: 96, d3x3red: 64, d3x3: 96, pool: 'avg', proj: 64, stride: 1 },
  { name: 'inception_3c', n1x1: 0, n3x3red: 128, n3x3: 160, d3x3red: 64, d3x3: 96, pool: 'max', proj: 0, stride: 2 },
  { name: 'inception_4a', n1x1: 224, n3x3red: 64, n3x3: 96, d3x3red: 96, d3x3: 128, pool: 'avg', proj: 128, stride: 1 },
  { name: 'inception_4b', n1x1: 192, n3x3red: 96, n3x3: 128, d3x3red: 96, d3x3: 128, pool: 'avg', proj: 128, stride: 1 },
  { name: 'inception_4c', n1x1: 160, n3x3red: 128, n3x3: 160, d3x3red: 128, d3x3: 160, pool: 'avg', proj: 128, stride: 1 },
  { name: 'inception_4d', n1x1: 96, n3x3red: 128, n3x3: 192, d3x3red: 160, d3x3: 192, pool: 'avg', proj: 128, stride: 1 },
  { name: 'inception_4e', n1x1: 0, n3x3red: 128, n3x3: 192, d3x3red: 192, d3x3: 256, pool: 'max', proj: 0, stride: 2 },
  { name: 'inception_5a', n1x1: 352, n3x3red: 192, n3x3: 320, d3x3red: 160, d3x3: 224, pool: 'avg', proj: 128, stride: 1 },
  // The published table uses max-pooling in 5b's projection branch.
  { name: 'inception_5b', n1x1: 352, n3x3red: 192, n3x3: 320, d3x3red: 192, d3x3: 224, pool: 'max', proj: 128, stride: 1 },
];

async function bnInceptionModule(b: GraphBuilder, x: Feature, m: BnInceptionModule): Promise<Feature> {
  const branches: Feature[] = [];
  const s = m.stride;
  if (m.n1x1 > 0) branches.push(await b.convBnRelu(x, `${m.name}/1x1`, m.n1x1, [1, 1]));
  const r = await b.convBnRelu(x, `${m.name}/3x3_reduce`, m.n3x3red, [1, 1]);
  branches.push(await b.convBnRelu(r, `${m.name}/3x3`, m.n3x3, [3, 3], s));
  const d0 = await b.convBnRelu(x, `${m.name}/double_3x3_reduce`, m.d3x3red, [1, 1]);
  const d1 = await b.convBnRelu(d0, `${m.name}/double_3x3_1`, m.d3x3, [3, 3]);
  branches.push(await b.convBnRelu(d1, `${m.name}/double_3x3_2`, m.d3x3, [3, 3], s));
  const p = b.pool(x, `${m.name}/pool`, m.pool, 3, s, 1);
  branches.push(m.proj > 0 ? await b.convBnRelu(p, `${m.name}/pool_proj`, m.proj, [1, 1]) : p);
  return b.concat(branches, `${m.name}/output`);
}

async function buildBnInception(b: GraphBuilder, input: Feature, classes: number): Promise<void> {
  let x = await b.convBnRelu(input, 'conv1/7x7_s2', 64, [7, 7], 2, [3, 3]);
  x = b.pool(x, 'pool1/3x3_s2', 'max', 3, 2, 1);
  x = await b.convBnRelu(x, 'conv2/3x3_reduce', 64, [1, 1]);
  x = await b.convBnRelu(x, 'conv2/3x3', 192, [3, 3]);
  x = b.pool(x, 'pool2/3x3_s2', 'max', 3, 2, 1);
  for (const m of BN_INCEPTION_MODULES) x = await bnInceptionModule(b, x, m);
  b.classifier(x, classes, OUTPUT_NAME);
}

// ---------------------------------------------------------------------------------------------
// Rethinking the Inception Architecture, Table 1 (channel counts as in the published Inception-v3)

async function figure5(b: GraphBuilder, x: Feature, name: string, poolProj: number): Promise<Feature> {
  const a = await b.convBnRelu(x, `${name}/1x1`, 64, [1, 1]);
  const r = await b.convBnRelu(x, `${name}/3x3_reduce`, 48, [1, 1]);
  const c = await b.convBnRelu(r, `${name}/3x3`, 64, [3, 3]);
  const d0 = await b.convBnRelu(x, `${name}/double_3x3_reduce`, 64, [1, 1]);
  const d1 = await b.convBnRelu(d0, `${name}/double_3x3_1`, 96, [3, 3]);
  const d2 = await b.convBnRelu(d1, `${name}/double_3x3_2`, 96, [3, 3]);
  const p = await b.convBnRelu(b.pool(x, `${name}/pool`, 'avg', 3, 1, 1), `${name}/pool_proj`, poolProj, [1, 1]);
  return b.concat([a, c, d2, p], `${name}/output`);
}

async function reduction35to17(b: GraphBuilder, x: Feature): Promise<Feature> {
  const name = 'reduction_a';
  const a = await b.convBnRelu(x, `${name}/3x3_s2`, 384, [3, 3], 2, [0, 0]);
  const d0 = await b.convBnRelu(x, `${name}/double_3x3_reduce`, 64, [1, 1]);
  const d1 = await b.convBnRelu(d0, `${name}/double_3x3_1`, 96, [3, 3]);
  const d2 = await b.convBnRelu(d1, `${name}/double_3x3_2_s2`, 96, [3, 3], 2, [0, 0]);
  const p = b.pool(x, `${name}/pool`, 'max', 3, 2, 0);
  return b.concat([a, d2, p], `${name}/output`);
}

async function figure6(b: GraphBuilder, x: Feature, name: string, c7: number): Promise<Feature> {
  const a = await b.convBnRelu(x, `${name}/1x1`, 192, [1, 1]);
  const s0 = await b.convBnRelu(x, `${name}/7x7_reduce`, c7, [1, 1]);
  const s1 = await b.convBnRelu(s0, `${name}/1x7`, c7, [1, 7]);
  const s2 = await b.convBnRelu(s1, `${name}/7x1`, 192, [7, 1]);
  const d0 = await b.convBnRelu(x, `${name}/double_7x7_reduce`, c7, [1, 1]);
  const d1 = await b.convBnRelu(d0, `${name}/double_7x1_1`, c7, [7, 1]);
  const d2 = await b.convBnRelu(d1, `${name}/double_1x7_1`, c7, [1, 7]);
  const d3 = await b.convBnRelu(d2, `${name}/double_7x1_2`, c7, [7, 1]);
  const d4 = await b.convBnRelu(d3, `${name}/double_1x7_2`, 192, [1, 7]);
  const p = await b.convBnRelu(b.pool(x, `${name}/pool`, 'avg', 3, 1, 1), `${name}/pool_proj`, 192, [1, 1]);
  return b.concat([a, s2, d4, p], `${name}/output`);
}

async function reduction17to8(b: GraphBuilder, x: Feature): Promise<Feature> {
  const name = 'reduction_b';
  const a0 = await b.convBnRelu(x, `${name}/3x3_reduce`, 192, [1, 1]);
  const a1 = await b.convBnRelu(a0, `${name}/3x3_s2`, 320, [3, 3], 2, [0, 0]);
  const s0 = await b.convBnRelu(x, `${name}/7x7x3_reduce`, 192, [1, 1]);
  const s1 = await b.convBnRelu(s0, `${name}/1x7`, 192, [1, 7]);
  const s2 = await b.convBnRelu(s1, `${name}/7x1`, 192, [7, 1]);
  const s3 = await b.convBnRelu(s2, `${name}/3x3_s2_b`, 192, [3, 3], 2, [0, 0]);
  const p = b.pool(x, `${name}/pool`, 'max', 3, 2, 0);
  return b.concat([a1, s3, p], `${name}/output`);
}

async function figure7(b: GraphBuilder, x: Feature, name: string): Promise<Feature> {
  const a = await b.convBnRelu(x, `${name}/1x1`, 320, [1, 1]);
  const s0 = await b.convBnRelu(x, `${name}/3x3_reduce`, 384, [1, 1]);
  const s1 = await b.convBnRelu(s0, `${name}/1x3`, 384, [1, 3]);
  const s2 = await b.convBnRelu(s0, `${name}/3x1`, 384, [3, 1]);
  const d0 = await b.convBnRelu(x, `${name}/double_3x3_reduce`, 448, [1, 1]);
  const d1 = await b.convBnRelu(d0, `${name}/double_3x3`, 384, [3, 3]);
  const d2 = await b.convBnRelu(d1, `${name}/double_1x3`, 384, [1, 3]);
  const d3 = await b.convBnRelu(d1, `${name}/double_3x1`, 384, [3, 1]);
  const p = await b.convBnRelu(b.pool(x, `${name}/pool`, 'avg', 3, 1, 1), `${name}/pool_proj`, 192, [1, 1]);
  return b.concat([a, s1, s2, d2, d3, p], `${name}/output`);
}

async function buildRethinkingV2(b: GraphBuilder, input: Feature, classes: number): Promise<void> {
  let x = await b.convBnRelu(input, 'stem/conv1_3x3_s2', 32, [3, 3], 2, [0, 0]); // 149
  x = await b.convBnRelu(x, 'stem/conv2_3x3', 32, [3, 3], 1, [0, 0]); // 147
  x = await b.convBnRelu(x, 'stem/conv3_3x3', 64, [3, 3], 1, [1, 1]); // 147
  x = b.pool(x, 'stem/pool1_3x3_s2', 'max', 3, 2, 0); // 73
  x = await b.convBnRelu(x, 'stem/conv4_3x3', 80, [3, 3], 1, [0, 0]); // 71
  x = await b.convBnRelu(x, 'stem/conv5_3x3_s2', 192, [3, 3], 2, [0, 0]); // 35
  x = await b.convBnRelu(x, 'stem/conv6_3x3', 288, [3, 3], 1, [1, 1]); // 35
  for (const [i, proj] of [32, 64, 64].entries()) x = await figure5(b, x, `mixed_35_${i + 1}`, proj);
  x = await reduction35to17(b, x); // 17×17×768
  for (const [i, c7] of [128, 160, 160, 160, 192].entries()) x = await figure6(b, x, `mixed_17_${i + 1}`, c7);
  x = await reduction17to8(b, x); // 8×8×1280
  for (let i = 1; i <= 2; i++) x = await figure7(b, x, `mixed_8_${i}`); // 8×8×2048
  b.classifier(x, classes, OUTPUT_NAME);
}

// ---------------------------------------------------------------------------------------------

/** Input geometry and pre-processing of each variant (the built manifest says the same). */
const VARIANT_INPUT: Record<InceptionVariant, ModelManifest['input']> = {
  // Same convention as the zoo manifest, so a built model is a drop-in stand-in for it.
  'bn-inception': {
    name: INPUT_NAME,
    layout: 'NCHW',
    width: 224,
    height: 224,
    channels: 'BGR',
    scale: 1,
    mean: [104, 117, 123],
    std: [1, 1, 1],
    resize: 'crop',
  },
  // Inception-v3 convention: pixels mapped to [-1, 1].
  'rethinking-v2': {
    name: INPUT_NAME,
    layout: 'NCHW',
    width: 299,
    height: 299,
    channels: 'RGB',
    scale: 1 / 127.5,
    mean: [1, 1, 1],
    std: [1, 1, 1],
    resize: 'crop',
  },
};

/** Generated images whose statistics set every BatchNormalization's running mean and variance. */
const CALIBRATION_IMAGES = 8;

export function builtInputSpec(variant: InceptionVariant = 'bn-inception'): ModelManifest['input'] {
  const spec = VARIANT_INPUT[variant];
  if (!spec) throw new Error(`unknown Inception variant "${String(variant)}" (bn-inception or rethinking-v2)`);
  return { ...spec, mean: [...spec.mean], std: [...spec.std] };
}

function checkOptions(opts: BuildOptions): Required<BuildOptions> {
  const seed = opts.seed ?? 1;
  const variant = opts.variant ?? 'bn-inception';
  const classes = opts.classes ?? 1000;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new Error(`seed must be an integer in 0..4294967295, got ${seed}`);
  }
  if (!(variant in VARIANT_INPUT)) {
    throw new Error(`unknown Inception variant "${String(variant)}" (bn-inception or rethinking-v2)`);
  }
  if (!Number.isInteger(classes) || classes < 2) throw new Error(`classes must be an integer ≥ 2, got ${classes}`);
  return { seed, variant, classes };
}

/** Builds the model in memory, with its parameter and multiply-add counts. */
export async function buildInceptionV2Detailed(opts: BuildOptions = {}): Promise<BuiltModel> {
  const { seed, variant, classes } = checkOptions(opts);
  const spec = VARIANT_INPUT[variant];
  const b = new GraphBuilder(seed);
  const input: Feature = {
    name: INPUT_NAME,
    c: 3,
    h: spec.height,
    w: spec.width,
    n: CALIBRATION_IMAGES,
    ch: spec.height,
    cw: spec.width,
    data: generateImages(seed, CALIBRATION_IMAGES, spec.width, spec),
  };
  if (variant === 'bn-inception') await buildBnInception(b, input, classes);
  else await buildRethinkingV2(b, input, classes);

  const graph = onnx.GraphProto.create({
    name: `inception_v2_${variant.replace('-', '_')}_seed${seed}`,
    node: b.nodes,
    initializer: b.initializers,
    input: [makeValueInfo(INPUT_NAME, DataType.FLOAT, [1, 3, spec.height, spec.width])],
    output: [makeValueInfo(OUTPUT_NAME, DataType.FLOAT, [1, classes])],
    docString: 'Inception V2 topology with seeded synthetic weights (labels are meaningless)',
  });
  const model = makeModel({ graph, opset: 13, irVersion: 7, producer: 'inceptiond model build' });
  return { model, params: b.params, macs: b.macs, inputName: INPUT_NAME, outputName: OUTPUT_NAME, size: spec.width };
}

export async function buildInceptionV2(opts: BuildOptions = {}): Promise<onnx.ModelProto> {
  return (await buildInceptionV2Detailed(opts)).model;
}

export interface WrittenModel {
  modelPath: string;
  manifestPath: string;
  params: number;
  macs: number;
}

/**
 * Builds and writes `outPath` and its manifest `<outPath>.json` (synthetic: true). With 1000 classes
 * the manifest points at the project's ImageNet label file so output is readable, with a note that
 * those labels mean nothing for these weights.
 */
export async function writeBuiltModel(outPath: string, opts: BuildOptions = {}): Promise<WrittenModel> {
  const checked = checkOptions(opts);
  const built = await buildInceptionV2Detailed(checked);
  const modelPath = path.resolve(outPath);
  await saveModel(built.model, modelPath);
  const manifest: ModelManifest = {
    name: `inception-v2-built-${checked.variant}`,
    file: path.basename(modelPath),
    input: builtInputSpec(checked.variant),
    output: { name: OUTPUT_NAME, activation: 'softmax' },
    ...(checked.classes === 1000 ? { labels: 'labels/imagenet-1k.txt' } : {}),
    precision: 'fp32',
    synthetic: true,
    variant: checked.variant,
    notes:
      `Built by inceptiond (model build, seed ${checked.seed}): the ${checked.variant} Inception V2 topology with ` +
      'seeded SYNTHETIC weights. Latency and quantization behaviour are representative; the labels it outputs are meaningless.',
  };
  const manifestPath = await writeManifestBeside(modelPath, manifest, modelsDir);
  return { modelPath, manifestPath, params: built.params, macs: built.macs };
}
