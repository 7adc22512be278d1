/**
 * AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"):
 * instead of rounding every weight to nearest, learn for each weight whether to round it down or up
 * so that the layer's output on calibration data is reconstructed.
 *
 * One layer at a time (Conv with groups/strides/pads/dilations, Gemm, MatMul), with the scales, zero
 * points and integer range the QDQ emitter uses (numeric.ts): the result is what qdq.ts would write,
 * only rounded differently. Every returned integer is floor(w/s)+zp or that plus one, clamped to the
 * range. Equation numbers refer to the arXiv version of the paper (2004.10568, section 4):
 *   (21) argmin_V ||Wx − W̃x||²_F + λ·f_reg(V)
 *   (22) W̃ = s·clip(⌊W/s⌋ + h(V), n, p)
 *   (23) h(V) = clip(σ(V)·(ζ−γ) + γ, 0, 1), ζ = 1.1, γ = −0.1
 *   (24) f_reg(V) = Σ 1 − |2h(V) − 1|^β, β annealed from 20 to 2
 *   (25) the asymmetric form: argmin_V ||f_a(Wx) − f_a(W̃x̂)||² with x̂ the input from the network
 *        whose earlier layers are already quantized (`inputs`) and x the float input (`floatInputs`).
 *
 * Cost and memory: a conv's inputs are unfolded (im2col) only at a bounded, seeded sample of output
 * positions (`maxPatches`, `maxPoolBytes`), so memory is that pool plus twelve 4-byte arrays of the
 * weight's size, whatever the number and size of the samples. Each iteration is two matrix products over a minibatch of the
 * pool (the output and the weight gradient), written as plain loops over Float32Arrays.
 */
import { mulberry32 } from '../../util/index.js';
import {
  adjustWeightScalesForBias,
  asymmetricZeroPoint,
  quantizeValue,
  quantRange,
  weightParams,
  type QuantizedWeights,
  type WeightScheme,
} from './numeric.js';

/** Stretch of the rectified sigmoid, eq. (23): h reaches exactly 0 and 1 for finite V. */
const ZETA = 1.1;
const GAMMA = -0.1;
/** |V| beyond which h(V) is exactly 0 or 1: σ(V) ≤ −γ/(ζ−γ) = 1/12 at V = −ln 11 ≈ −2.398 (with margin). */
const SATURATED_V = 2.4;

export interface ConvLayerSpec {
  op: 'Conv';
  /** one sample's input: [channels, height, width] (NCHW without N) */
  inputShape: readonly [number, number, number];
  group?: number;
  strides?: readonly [number, number];
  /** ONNX order: [top, left, bottom, right] */
  pads?: readonly [number, number, number, number];
  dilations?: readonly [number, number];
}

export interface GemmLayerSpec {
  /** MatMul: weight [K, N] (as Gemm with transB = 0) */
  op: 'Gemm' | 'MatMul';
  /** Gemm only: weight [N, K] when true, [K, N] when false (default) */
  transB?: boolean;
}

export type AdaroundLayerSpec = ConvLayerSpec | GemmLayerSpec;

export interface AdaroundOptions {
  /** optimization steps (the paper: 10 000); 0 returns round-to-nearest */
  iterations?: number;
  /** output positions (patches) per step */
  batchSize?: number;
  /** output positions unfolded from the samples, at most; they are all the data the optimization sees */
  maxPatches?: number;
  /** bytes of the unfolded pool (patches and their targets), at most: fewer patches when patches are long */
  maxPoolBytes?: number;
  /** patches of the pool on which the reported MSEs are measured (the first ones: a random subset) */
  evalPatches?: number;
  /** fraction of the steps without the regularizer (the paper: 0.2) */
  warmup?: number;
  /** β of eq. (24) at the end of the warm-up and at the last step */
  betaStart?: number;
  betaEnd?: number;
  /** λ of eq. (21), with the reconstruction term summed over output channels and averaged over positions */
  regularization?: number;
  /** Adam step size on V */
  learningRate?: number;
  /** seeds the patch sample and the minibatch order */
  seed?: number;
}

export interface AdaroundLayerInput {
  layer: AdaroundLayerSpec;
  /** float weights in ONNX layout: Conv [M, C/group, kH, kW], Gemm [K, N] or [N, K] (transB), MatMul [K, N] */
  weights: Float32Array;
  weightDims: readonly number[];
  /** float bias, one per output channel; it only matters with activation 'relu' */
  bias?: Float32Array;
  /** the scheme, scales and zero points quantizeWeights would get (one per output channel, or one) */
  scheme: WeightScheme;
  scales: Float32Array;
  zeroPoints: readonly number[];
  /**
   * The layer's input samples as the quantized network gives them (x̂ in eq. 25): Conv one
   * [C, H, W] tensor each; Gemm/MatMul one or more rows of K values each.
   */
  inputs: readonly Float32Array[];
  /** the float layer's outputs for the same samples (Conv [M, oH, oW], Gemm rows of N), after the activation */
  targets?: readonly Float32Array[];
  /** the float network's inputs for the same samples (x in eq. 25); targets are computed from them with the float weights */
  floatInputs?: readonly Float32Array[];
  /** 'relu': reconstruct relu(Wx + b) as in eq. (25), for a layer whose Relu the quantizer folds */
  activation?: 'none' | 'relu';
  options?: AdaroundOptions;
}

export interface AdaroundStats {
  /** mean squared output error per element with round-to-nearest (what quantizeWeights gives) */
  initialMse: number;
  /** the same with the returned integers */
  finalMse: number;
  /** the learned rounding's error, even when it was not better and nearest was returned */
  learnedMse: number;
  /** true when the learned rounding did not beat round-to-nearest on the pool and nearest was returned */
  keptNearest: boolean;
  /** weights whose returned integer differs from round-to-nearest */
  changed: number;
  weights: number;
  /** patches in the pool / on which the MSEs were measured */
  patches: number;
  evalPatches: number;
  iterations: number;
  timeMs: number;
  /** bytes of the typed arrays this call allocated (the pool and the per-weight state), at their peak */
  memoryBytes: number;
}

export interface AdaroundResult {
  /** the integer weights, same layout as `weights` (Int8Array for int8 schemes, Uint8Array for uint8) */
  data: Int8Array | Uint8Array;
  stats: AdaroundStats;
}

/**
 * Defaults for our cost budget rather than the paper's (10 000 steps of 32 whole images, Adam at
 * 1e-3): 2000 steps of 64 patches at 1e-2. On a 3×3 192→64 conv (bench/quantize-adaround.ts) the
 * held-out output MSE was 0.45 of nearest's after 500×128 steps, 0.32 after 2000×64, 0.30 after
 * 2000×128 (1.5× the CPU); 1e-3 gave 0.36 after 2000×128. λ = 0.01 with the reconstruction term
 * summed over channels and averaged over positions, as in the public implementations.
 */
export const ADAROUND_DEFAULTS: Required<AdaroundOptions> = {
  iterations: 2000,
  batchSize: 64,
  maxPatches: 4096,
  maxPoolBytes: 64 << 20,
  evalPatches: 1024,
  warmup: 0.2,
  betaStart: 20,
  betaEnd: 2,
  regularization: 0.01,
  learningRate: 1e-2,
  seed: 1,
};

/**
 * The scales and zero points qdq.ts gives a Conv/Gemm weight: weightParams for the scheme, then the
 * channel scales raised where the int32 bias would not fit (with the asymmetric zero points moved
 * with them). `axis` is the output-channel axis: 0 for Conv and Gemm transB = 1, 1 for Gemm transB = 0.
 */
export function layerWeightParams(
  values: Float32Array,
  dims: readonly number[],
  axis: number,
  scheme: WeightScheme,
  opts: { bias?: Float32Array; inputScale?: number; minRealRange?: number } = {},
): { scales: Float32Array; zeroPoints: number[] } {
  const wp = weightParams(values, dims, axis, scheme, opts.minRealRange);
  if (!opts.bias || opts.inputScale === undefined) return { scales: wp.scales, zeroPoints: wp.zeroPoints };
  const adj = adjustWeightScalesForBias(opts.bias, opts.inputScale, wp.scales);
  const raised = new Set(adj.adjusted);
  const zeroPoints = scheme.symmetric
    ? wp.zeroPoints
    : wp.zeroPoints.map((z, c) => (raised.has(c) ? asymmetricZeroPoint(wp.mins[c]!, adj.scales[c]!, scheme.type) : z));
  return { scales: adj.scales, zeroPoints };
}

/** Integer weights rounded elsewhere (AdaRound) and the parameters they were rounded with. */
export interface RoundedWeights {
  data: Int8Array | Uint8Array;
  scales: Float32Array;
  zeroPoints: readonly number[];
}

/**
 * For qdq.ts: precomputed integer weights in place of round-to-nearest, after checking that they
 * belong to this tensor — the same scales and zero points as emitQdq computed (a different input
 * scale or bias would have changed them), the element type of the scheme, and every value floor or
 * ceil of w/s + zp within the range.
 */
export function useRoundedWeights(
  name: string,
  rounded: RoundedWeights,
  values: Float32Array,
  dims: readonly number[],
  axis: number,
  scheme: WeightScheme,
  scales: Float32Array,
  zeroPoints: readonly number[],
): QuantizedWeights {
  const fail = (why: string): never => {
    throw new Error(`rounded weights for ${name}: ${why}`);
  };
  if (rounded.data.length !== values.length) fail(`${rounded.data.length} values, the tensor has ${values.length}`);
  if ((scheme.type === 'int8') !== rounded.data instanceof Int8Array) fail(`not ${scheme.type} data`);
  if (rounded.scales.length !== scales.length || rounded.scales.some((s, c) => s !== scales[c])) {
    fail('rounded with other scales than the emitter computes (input scale, bias or scheme changed?)');
  }
  if (rounded.zeroPoints.length !== zeroPoints.length || rounded.zeroPoints.some((z, c) => z !== zeroPoints[c])) fail('other zero points');
  const { qmin, qmax } = quantRange(scheme.type, scheme.symmetric);
  let inner = 1;
  for (let d = axis + 1; d < dims.length; d++) inner *= dims[d]!;
  const channels = scales.length;
  for (let i = 0; i < values.length; i++) {
    const c = channels === 1 ? 0 : Math.floor(i / inner) % channels;
    const fl = Math.floor(Math.fround(values[i]! / scales[c]!)) + zeroPoints[c]!;
    const q = rounded.data[i]!;
    if (q !== Math.min(Math.max(fl, qmin), qmax) && q !== Math.min(Math.max(fl + 1, qmin), qmax)) {
      fail(`value ${i} is ${q}, neither floor nor ceil of w/s + zp (${fl} or ${fl + 1})`);
    }
  }
  const zp = scheme.type === 'int8' ? Int8Array.from(zeroPoints) : Uint8Array.from(zeroPoints);
  return { data: rounded.data, scales, zeroPoints: zp };
}

/** How a layer's weights and samples map to rows of a [M, Kg] matrix and patches of length C·kH·kW. */
interface Geometry {
  /** output channels M */
  outChannels: number;
  groups: number;
  /** weights per output channel (Kg); a patch holds groups × Kg values, group g at [g·Kg, (g+1)·Kg) */
  rowLength: number;
  /** output positions of a sample (conv: oH·oW; gemm: its rows) */
  positions(sample: Float32Array): number;
  /** writes the patch of output position `pos` of `sample` into dst[offset …] */
  unfold(sample: Float32Array, pos: number, dst: Float32Array, offset: number): void;
  /** index in a sample's output of (position, channel) */
  outputIndex(pos: number, channel: number): number;
  outputLength(sample: Float32Array): number;
  /** index in the ONNX weight tensor of (output channel, position in its row) */
  weightIndex(channel: number, k: number): number;
}

function convGeometry(spec: ConvLayerSpec, dims: readonly number[]): Geometry {
  if (dims.length !== 4) throw new Error(`Conv weight must be 4-D [M, C/group, kH, kW], got [${dims.join(',')}]`);
  const [M, Cg, kH, kW] = dims as [number, number, number, number];
  const [C, H, W] = spec.inputShape;
  const group = spec.group ?? 1;
  const [sH, sW] = spec.strides ?? [1, 1];
  const [pT, pL, pB, pR] = spec.pads ?? [0, 0, 0, 0];
  const [dH, dW] = spec.dilations ?? [1, 1];
  if (C !== Cg * group || M % group !== 0) {
    throw new Error(`Conv with group ${group}: input has ${C} channels, weight [${dims.join(',')}] expects ${Cg * group}`);
  }
  const oH = Math.floor((H + pT + pB - dH * (kH - 1) - 1) / sH) + 1;
  const oW = Math.floor((W + pL + pR - dW * (kW - 1) - 1) / sW) + 1;
  if (oH < 1 || oW < 1) throw new Error(`Conv output would be empty (${oH}×${oW})`);
  const inputLength = C * H * W;
  const oHW = oH * oW;
  return {
    outChannels: M,
    groups: group,
    rowLength: Cg * kH * kW,
    positions(sample) {
      if (sample.length !== inputLength)
        throw new Error(`Conv input sample has ${sample.length} values, expected ${inputLength} (${C}×${H}×${W})`);
      return oHW;
    },
    unfold(sample, pos, dst, offset) {
      const oy = Math.floor(pos / oW);
      const ox = pos - oy * oW;
      const y0 = oy * sH - pT;
      const x0 = ox * sW - pL;
      let o = offset;
      for (let c = 0; c < C; c++) {
        const plane = c * H * W;
        for (let ky = 0; ky < kH; ky++) {
          const iy = y0 + ky * dH;
          if (iy < 0 || iy >= H) {
            dst.fill(0, o, o + kW);
            o += kW;
            continue;
          }
          const rowBase = plane + iy * W;
          for (let kx = 0; kx < kW; kx++, o++) {
            const ix = x0 + kx * dW;
            dst[o] = ix >= 0 && ix < W ? sample[rowBase + ix]! : 0;
          }
        }
      }
    },
    outputIndex: (pos, channel) => channel * oHW + pos,
    outputLength: () => M * oHW,
    weightIndex: (channel, k) => channel * Cg * kH * kW + k,
  };
}

function gemmGeometry(spec: GemmLayerSpec, dims: readonly number[]): Geometry {
  if (dims.length !== 2) throw new Error(`${spec.op} weight must be 2-D, got [${dims.join(',')}]`);
  const transB = spec.op === 'Gemm' && spec.transB === true;
  const [K, N] = transB ? [dims[1]!, dims[0]!] : [dims[0]!, dims[1]!];
  return {
    outChannels: N,
    groups: 1,
    rowLength: K,
    positions(sample) {
      if (sample.length === 0 || sample.length % K !== 0)
        throw new Error(`${spec.op} input sample has ${sample.length} values, not rows of ${K}`);
      return sample.length / K;
    },
    unfold(sample, pos, dst, offset) {
      dst.set(sample.subarray(pos * K, (pos + 1) * K), offset);
    },
    outputIndex: (pos, channel) => pos * N + channel,
    outputLength: (sample) => (sample.length / K) * N,
    weightIndex: transB ? (channel, k) => channel * K + k : (channel, k) => k * N + channel,
  };
}

/**
 * Output of the weight rows `weights` [M, Kg] (+ bias, then ReLU if asked) for `count` patches of the
 * pool, listed in `rows`: out[b·M + m]. Four output channels per pass over a patch group.
 */
function forwardPatches(
  weights: Float32Array,
  bias: Float32Array | undefined,
  relu: boolean,
  patches: Float32Array,
  rows: Int32Array,
  count: number,
  geo: Geometry,
  out: Float32Array,
): void {
  const M = geo.outChannels;
  let b = 0;
  // Two patches × four weight rows per pass: 6 loads for 8 multiply-adds.
  for (; b + 2 <= count; b += 2) forwardPatchPair(weights, patches, rows[b]!, rows[b + 1]!, b * M, (b + 1) * M, geo, out);
  for (; b < count; b++) forwardPatchPair(weights, patches, rows[b]!, -1, b * M, -1, geo, out);
  for (let i = 0; i < count * M; i++) {
    let y = out[i]!;
    if (bias) y += bias[i % M]!;
    out[i] = relu && y < 0 ? 0 : y;
  }
}

/** Outputs of patches r0 and r1 (r1 = −1: only r0) into out[o0 + m] and out[o1 + m]. */
function forwardPatchPair(
  weights: Float32Array,
  patches: Float32Array,
  r0: number,
  r1: number,
  o0: number,
  o1: number,
  geo: Geometry,
  out: Float32Array,
): void {
  const M = geo.outChannels;
  const Kg = geo.rowLength;
  const perGroup = M / geo.groups;
  const patchLength = Kg * geo.groups;
  const single = r1 < 0;
  const pa = r0 * patchLength;
  const pb = (single ? r0 : r1) * patchLength;
  for (let g = 0; g < geo.groups; g++) {
    const xa = pa + g * Kg;
    const xb = pb + g * Kg;
    const mEnd = (g + 1) * perGroup;
    let m = g * perGroup;
    for (; m + 4 <= mEnd; m += 4) {
      const w0 = m * Kg;
      const w1 = w0 + Kg;
      const w2 = w1 + Kg;
      const w3 = w2 + Kg;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let b0 = 0;
      let b1 = 0;
      let b2 = 0;
      let b3 = 0;
      for (let k = 0; k < Kg; k++) {
        const x = patches[xa + k]!;
        const y = patches[xb + k]!;
        const v0 = weights[w0 + k]!;
        const v1 = weights[w1 + k]!;
        const v2 = weights[w2 + k]!;
        const v3 = weights[w3 + k]!;
        a0 += v0 * x;
        a1 += v1 * x;
        a2 += v2 * x;
        a3 += v3 * x;
        b0 += v0 * y;
        b1 += v1 * y;
        b2 += v2 * y;
        b3 += v3 * y;
      }
      out[o0 + m] = a0;
      out[o0 + m + 1] = a1;
      out[o0 + m + 2] = a2;
      out[o0 + m + 3] = a3;
      if (!single) {
        out[o1 + m] = b0;
        out[o1 + m + 1] = b1;
        out[o1 + m + 2] = b2;
        out[o1 + m + 3] = b3;
      }
    }
    for (; m < mEnd; m++) {
      const w0 = m * Kg;
      let a0 = 0;
      let b0 = 0;
      for (let k = 0; k < Kg; k++) {
        a0 += weights[w0 + k]! * patches[xa + k]!;
        b0 += weights[w0 + k]! * patches[xb + k]!;
      }
      out[o0 + m] = a0;
      if (!single) out[o1 + m] = b0;
    }
  }
}

/**
 * grad[m, k] += Σ_b err[b, m] · patch_b[group(m), k] for the `count` patches in `rows` (four patches
 * per pass over a weight row; output channels whose four errors are all 0 — ReLU-clipped — are skipped).
 */
function accumulateWeightGradient(
  err: Float32Array,
  patches: Float32Array,
  rows: Int32Array,
  count: number,
  geo: Geometry,
  grad: Float32Array,
): void {
  const M = geo.outChannels;
  const Kg = geo.rowLength;
  const perGroup = M / geo.groups;
  const patchLength = Kg * geo.groups;
  let b = 0;
  for (; b + 4 <= count; b += 4) {
    const p0 = rows[b]! * patchLength;
    const p1 = rows[b + 1]! * patchLength;
    const p2 = rows[b + 2]! * patchLength;
    const p3 = rows[b + 3]! * patchLength;
    // Two weight rows of one group per pass when both have errors: 6 loads, 2 stores for 8 multiply-adds.
    let m = 0;
    for (; m < M; m++) {
      const e0 = err[b * M + m]!;
      const e1 = err[(b + 1) * M + m]!;
      const e2 = err[(b + 2) * M + m]!;
      const e3 = err[(b + 3) * M + m]!;
      if (e0 === 0 && e1 === 0 && e2 === 0 && e3 === 0) continue;
      const group = Math.floor(m / perGroup);
      const go = group * Kg;
      const x0 = p0 + go;
      const x1 = p1 + go;
      const x2 = p2 + go;
      const x3 = p3 + go;
      const wo = m * Kg;
      const n = m + 1;
      if (n < M && Math.floor(n / perGroup) === group) {
        const f0 = err[b * M + n]!;
        const f1 = err[(b + 1) * M + n]!;
        const f2 = err[(b + 2) * M + n]!;
        const f3 = err[(b + 3) * M + n]!;
        const vo = n * Kg;
        for (let k = 0; k < Kg; k++) {
          const a = patches[x0 + k]!;
          const c = patches[x1 + k]!;
          const d = patches[x2 + k]!;
          const e = patches[x3 + k]!;
          grad[wo + k] += e0 * a + e1 * c + e2 * d + e3 * e;
          grad[vo + k] += f0 * a + f1 * c + f2 * d + f3 * e;
        }
        m++;
        continue;
      }
      for (let k = 0; k < Kg; k++) {
        grad[wo + k] += e0 * patches[x0 + k]! + e1 * patches[x1 + k]! + e2 * patches[x2 + k]! + e3 * patches[x3 + k]!;
      }
    }
  }
  for (; b < count; b++) {
    const p0 = rows[b]! * patchLength;
    for (let m = 0; m < M; m++) {
      const e0 = err[b * M + m]!;
      if (e0 === 0) continue;
      const x0 = p0 + Math.floor(m / perGroup) * Kg;
      const wo = m * Kg;
      for (let k = 0; k < Kg; k++) grad[wo + k] += e0 * patches[x0 + k]!;
    }
  }
}

/** Mean squared error per output element of weight rows over the first `count` patches of the pool. */
function reconstructionMse(
  weights: Float32Array,
  bias: Float32Array | undefined,
  relu: boolean,
  patches: Float32Array,
  targets: Float32Array,
  count: number,
  geo: Geometry,
  scratch: Float32Array,
  chunk: Int32Array,
): number {
  const M = geo.outChannels;
  let sum = 0;
  for (let start = 0; start < count; start += chunk.length) {
    const n = Math.min(chunk.length, count - start);
    for (let i = 0; i < n; i++) chunk[i] = start + i;
    forwardPatches(weights, bias, relu, patches, chunk, n, geo, scratch);
    for (let i = 0; i < n * M; i++) {
      const d = scratch[i]! - targets[start * M + i]!;
      sum += d * d;
    }
  }
  return sum / (count * M);
}

/** ln(p / (1 − p)): V with σ(V) = p. */
function logit(p: number): number {
  return Math.log(p / (1 - p));
}

/**
 * Learns the rounding of one layer's weights (AdaRound) and returns the integer weights with the
 * given scales and zero points, and how much closer the layer's output came to the float layer's.
 */
export function adaroundLayer(input: AdaroundLayerInput): AdaroundResult {
  const started = performance.now();
  const opts = { ...ADAROUND_DEFAULTS, ...input.options };
  const { layer, weights, weightDims, bias, scheme, scales, zeroPoints, inputs } = input;
  const relu = input.activation === 'relu';
  const geo = layer.op === 'Conv' ? convGeometry(layer, weightDims) : gemmGeometry(layer, weightDims);
  const M = geo.outChannels;
  const Kg = geo.rowLength;
  const patchLength = Kg * geo.groups;
  const perGroup = M / geo.groups;
  const count = M * Kg;
  if (weights.length !== count) throw new Error(`weights have ${weights.length} values, dims [${weightDims.join(',')}] say ${count}`);
  if (bias && bias.length !== M) throw new Error(`bias has ${bias.length} values, the layer has ${M} output channels`);
  const perChannel = scheme.perChannel;
  const params = perChannel ? M : 1;
  if (scales.length !== params || zeroPoints.length !== params) {
    throw new Error(`expected ${params} scales and zero points, got ${scales.length} and ${zeroPoints.length}`);
  }
  if (inputs.length === 0) throw new Error('AdaRound needs at least one input sample');
  if (input.targets && input.targets.length !== inputs.length)
    throw new Error(`${inputs.length} inputs but ${input.targets.length} targets`);
  if (input.floatInputs && input.floatInputs.length !== inputs.length) {
    throw new Error(`${inputs.length} inputs but ${input.floatInputs.length} float inputs`);
  }
  if (!Number.isInteger(opts.iterations) || opts.iterations < 0)
    throw new Error(`iterations must be an integer ≥ 0, got ${opts.iterations}`);
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`batchSize must be an integer ≥ 1, got ${opts.batchSize}`);
  if (!Number.isInteger(opts.maxPatches) || opts.maxPatches < 1)
    throw new Error(`maxPatches must be an integer ≥ 1, got ${opts.maxPatches}`);
  const { qmin, qmax } = quantRange(scheme.type, scheme.symmetric);
  let allocated = 0;
  const f32 = (n: number): Float32Array => {
    allocated += n * 4;
    return new Float32Array(n);
  };
  const i32 = (n: number): Int32Array => {
    allocated += n * 4;
    return new Int32Array(n);
  };

  // Float weights as rows [M, Kg], and per weight the floor of w/s (plus zp) that rounding starts from.
  const rowScale = new Float64Array(M);
  const rowZero = new Float64Array(M);
  const floatRows = f32(count);
  const floorQ = i32(count);
  const nearest = i32(count);
  const V = f32(count);
  for (let m = 0; m < M; m++) {
    const s = scales[perChannel ? m : 0]!;
    const z = zeroPoints[perChannel ? m : 0]!;
    rowScale[m] = s;
    rowZero[m] = z;
    for (let k = 0; k < Kg; k++) {
      const i = m * Kg + k;
      const w = weights[geo.weightIndex(m, k)]!;
      floatRows[i] = w;
      // float32 division, as quantizeValue does, so floor/ceil bracket exactly the value it rounds
      const v = Math.fround(w / s);
      const fl = Math.floor(v);
      floorQ[i] = fl + z;
      nearest[i] = quantizeValue(w, s, z, qmin, qmax);
      // h(V) = fractional part at the start, so W̃ = W (before clipping) when the optimization begins
      V[i] = logit((v - fl - GAMMA) / (ZETA - GAMMA));
    }
  }

  // The pool: a seeded sample of output positions across all samples, unfolded to patches.
  const positions = inputs.map((x) => geo.positions(x));
  const start = new Float64Array(inputs.length + 1);
  for (let n = 0; n < inputs.length; n++) start[n + 1] = start[n]! + positions[n]!;
  const total = start[inputs.length]!;
  const P = Math.max(1, Math.min(total, opts.maxPatches, Math.floor(opts.maxPoolBytes / ((patchLength + M) * 4))));
  const random = mulberry32(opts.seed);
  const chosen = sampleIndices(total, P, random);
  const patches = f32(P * patchLength);
  const targets = f32(P * M);
  const floatPatch = input.targets ? undefined : f32(patchLength);
  let n = 0;
  for (let p = 0; p < P; p++) {
    const index = chosen[p]!;
    while (index >= start[n + 1]!) n++;
    while (index < start[n]!) n--;
    const pos = index - start[n]!;
    const sample = inputs[n]!;
    geo.unfold(sample, pos, patches, p * patchLength);
    const given = input.targets?.[n];
    if (given) {
      if (given.length !== geo.outputLength(sample))
        throw new Error(`target ${n} has ${given.length} values, expected ${geo.outputLength(sample)}`);
      for (let m = 0; m < M; m++) targets[p * M + m] = given[geo.outputIndex(pos, m)]!;
      continue;
    }
    // Targets from the float weights, on the float input when given (eq. 25) or on the same input (eq. 21).
    const floatSample = input.floatInputs?.[n];
    const src = floatSample ? floatPatch! : patches.subarray(p * patchLength, (p + 1) * patchLength);
    if (floatSample) {
      if (floatSample.length !== sample.length)
        throw new Error(`float input ${n} has ${floatSample.length} values, input has ${sample.length}`);
      geo.unfold(floatSample, pos, floatPatch!, 0);
    }
    for (let m = 0; m < M; m++) {
      const xo = Math.floor(m / perGroup) * Kg;
      let acc = bias ? bias[m]! : 0;
      for (let k = 0; k < Kg; k++) acc += floatRows[m * Kg + k]! * src[xo + k]!;
      targets[p * M + m] = relu && acc < 0 ? 0 : acc;
    }
  }

  // Scratch for the minibatch and evaluation.
  const batch = Math.min(opts.batchSize, P);
  const evalCount = Math.min(P, Math.max(1, opts.evalPatches));
  const chunk = new Int32Array(Math.min(256, evalCount));
  const scratch = f32(Math.max(batch, chunk.length) * M);
  const hardRows = f32(count);
  const dequantizeInto = (q: Int32Array): void => {
    for (let m = 0; m < M; m++) {
      const s = rowScale[m]!;
      const z = rowZero[m]!;
      for (let k = 0; k < Kg; k++) hardRows[m * Kg + k] = s * (q[m * Kg + k]! - z);
    }
  };
  dequantizeInto(nearest);
  const initialMse = reconstructionMse(hardRows, bias, relu, patches, targets, evalCount, geo, scratch, chunk);

  let learned = nearest;
  let learnedMse = initialMse;
  if (opts.iterations > 0) {
    learned = optimizeRounding({
      V,
      floorQ,
      rowScale,
      rowZero,
      qmin,
      qmax,
      geo,
      bias,
      relu,
      patches,
      targets,
      P,
      batch,
      opts,
      random,
      f32,
      i32,
    });
    dequantizeInto(learned);
    learnedMse = reconstructionMse(hardRows, bias, relu, patches, targets, evalCount, geo, scratch, chunk);
  }
  // Guard: a learned rounding that does not beat nearest on the pool is not worth the difference.
  const keptNearest = !(learnedMse < initialMse);
  const chosenQ = keptNearest ? nearest : learned;
  const data = scheme.type === 'int8' ? new Int8Array(count) : new Uint8Array(count);
  let changed = 0;
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < Kg; k++) {
      const i = m * Kg + k;
      data[geo.weightIndex(m, k)] = chosenQ[i]!;
      if (chosenQ[i] !== nearest[i]) changed++;
    }
  }
  return {
    data,
    stats: {
      initialMse,
      finalMse: keptNearest ? initialMse : learnedMse,
      learnedMse,
      keptNearest,
      changed,
      weights: count,
      patches: P,
      evalPatches: evalCount,
      iterations: opts.iterations,
      timeMs: performance.now() - started,
      memoryBytes: allocated,
    },
  };
}

/** `count` distinct indices in [0, total) in a seeded random order (so the first evalPatches are a random subset). */
function sampleIndices(total: number, count: number, random: () => number): Float64Array {
  const out = new Float64Array(count);
  if (count === total) {
    for (let i = 0; i < count; i++) out[i] = i;
  } else {
    // Floyd's algorithm: no array of size `total` (a conv's positions over many samples can be millions).
    const taken = new Set<number>();
    for (let j = total - count; j < total; j++) {
      const t = Math.floor(random() * (j + 1));
      const pick = taken.has(t) ? j : t;
      taken.add(pick);
      out[j - (total - count)] = pick;
    }
  }
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}

interface OptimizationState {
  V: Float32Array;
  floorQ: Int32Array;
  rowScale: Float64Array;
  rowZero: Float64Array;
  qmin: number;
  qmax: number;
  geo: Geometry;
  bias: Float32Array | undefined;
  relu: boolean;
  patches: Float32Array;
  targets: Float32Array;
  P: number;
  batch: number;
  opts: Required<AdaroundOptions>;
  random: () => number;
  f32: (n: number) => Float32Array;
  i32: (n: number) => Int32Array;
}

/** Adam on V for eq. (21)/(25) + λ·eq. (24); returns the hard rounding h(V) ≥ 0.5 as integers. */
function optimizeRounding(st: OptimizationState): Int32Array {
  const { V, floorQ, rowScale, rowZero, qmin, qmax, geo, bias, relu, patches, targets, P, batch, opts, random } = st;
  const M = geo.outChannels;
  const Kg = geo.rowLength;
  const count = M * Kg;
  const soft = st.f32(count);
  const h = st.f32(count);
  const dh = st.f32(count);
  const grad = st.f32(count);
  const adamM = st.f32(count);
  const adamV = st.f32(count);
  const err = st.f32(batch * M);
  const order = st.i32(P);
  for (let i = 0; i < P; i++) order[i] = i;
  const rows = st.i32(batch);
  let cursor = P;
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-8;
  const lr = opts.learningRate;
  const lambda = opts.regularization;
  const T = opts.iterations;
  const warmupEnd = Math.floor(opts.warmup * T);
  for (let t = 0; t < T; t++) {
    // β from betaStart to betaEnd (the paper: 20 → 2), decayed linearly after the warm-up as in the
    // public implementations (BRECQ, AIMET); no regularizer during the warm-up.
    const regularized = t >= warmupEnd;
    const progress = T > warmupEnd ? (t - warmupEnd) / (T - warmupEnd) : 1;
    const beta = opts.betaEnd + (opts.betaStart - opts.betaEnd) * Math.max(0, 1 - progress);

    // Soft weights, eq. (22)–(23), and ∂h/∂V (0 where h or the integer range clips).
    for (let m = 0; m < M; m++) {
      const s = rowScale[m]!;
      const z = rowZero[m]!;
      for (let k = 0, i = m * Kg; k < Kg; k++, i++) {
        const vi = V[i]!;
        let hv: number;
        let d: number;
        if (vi <= -SATURATED_V) {
          // h is clipped at 0 (or 1) well before |V| = ln 11: no exp for the weights already decided.
          hv = 0;
          d = 0;
        } else if (vi >= SATURATED_V) {
          hv = 1;
          d = 0;
        } else {
          const sig = 1 / (1 + Math.exp(-vi));
          const stretched = sig * (ZETA - GAMMA) + GAMMA;
          hv = stretched;
          d = (ZETA - GAMMA) * sig * (1 - sig);
          if (stretched <= 0) {
            hv = 0;
            d = 0;
          } else if (stretched >= 1) {
            hv = 1;
            d = 0;
          }
        }
        let q = floorQ[i]! + hv;
        if (q > qmax) {
          q = qmax;
          d = 0;
        } else if (q < qmin) {
          q = qmin;
          d = 0;
        }
        h[i] = hv;
        soft[i] = s * (q - z);
        dh[i] = d;
      }
    }

    // Minibatch: the next `batch` patches of a seeded permutation of the pool, reshuffled per pass.
    for (let b = 0; b < batch; b++) {
      if (cursor >= P) {
        for (let i = P - 1; i > 0; i--) {
          const j = Math.floor(random() * (i + 1));
          const tmp = order[i]!;
          order[i] = order[j]!;
          order[j] = tmp;
        }
        cursor = 0;
      }
      rows[b] = order[cursor++]!;
    }
    forwardPatches(soft, bias, relu, patches, rows, batch, geo, err);
    // Reconstruction term: mean over positions of Σ_m (ŷ − y)², so ∂/∂ŷ = 2(ŷ − y)/batch (0 where ReLU clipped ŷ).
    const g2 = 2 / batch;
    for (let b = 0; b < batch; b++) {
      const to = rows[b]! * M;
      for (let m = 0; m < M; m++) {
        const y = err[b * M + m]!;
        err[b * M + m] = relu && y <= 0 ? 0 : g2 * (y - targets[to + m]!);
      }
    }
    grad.fill(0);
    accumulateWeightGradient(err, patches, rows, batch, geo, grad);

    // Chain rule to V, plus λ·∂f_reg/∂V (eq. 24): ∂/∂h [1 − |2h−1|^β] = −2β·|2h−1|^(β−1)·sign(2h−1).
    const step = t + 1;
    const correction1 = 1 - beta1 ** step;
    const correction2 = 1 - beta2 ** step;
    const regScale = lambda * 2 * beta;
    for (let m = 0; m < M; m++) {
      const s = rowScale[m]!;
      for (let k = 0, i = m * Kg; k < Kg; k++, i++) {
        const d = dh[i]!;
        if (d === 0 && adamM[i] === 0 && adamV[i] === 0) continue;
        let g = grad[i]! * s * d;
        if (regularized && d !== 0) {
          const u = 2 * h[i]! - 1;
          // |u|^(β−1) as exp((β−1)·ln|u|): V8's pow is ~48 ns, exp and log together ~28 (|u| = 0 gives 0 either way)
          const power = Math.exp((beta - 1) * Math.log(u < 0 ? -u : u));
          g -= regScale * (u < 0 ? -power : power) * d;
        }
        const mi = beta1 * adamM[i]! + (1 - beta1) * g;
        const vi = beta2 * adamV[i]! + (1 - beta2) * g * g;
        adamM[i] = mi;
        adamV[i] = vi;
        V[i] = V[i]! - (lr * (mi / correction1)) / (Math.sqrt(vi / correction2) + eps);
      }
    }
  }

  // Hard rounding: up where h(V) ≥ 0.5 (the regularizer has pushed h to 0 or 1 by now).
  const q = st.i32(count);
  for (let i = 0; i < count; i++) {
    const sig = 1 / (1 + Math.exp(-V[i]!));
    const hv = Math.min(1, Math.max(0, sig * (ZETA - GAMMA) + GAMMA));
    const v = floorQ[i]! + (hv >= 0.5 ? 1 : 0);
    q[i] = Math.min(Math.max(v, qmin), qmax);
  }
  return q;
}
