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
 * positions (`maxPatches`, `maxPoolBytes`), so memory is that pool plus about ten 4-byte arrays of the
 * weight's size (the step's own intermediates are per block of channels), whatever the number and size
 * of the samples. Each iteration (two matrix products over
 * a minibatch of the pool, the output and the weight gradient, and the per-weight rounding, regularizer
 * and Adam update) is one ONNX Runtime run of a small graph (adaround-step.ts), as is the error report.
 */
import { mulberry32 } from '../../util/index.js';
import { AdaroundStepper, GAMMA, ReconstructionError, ZETA } from './adaround-step.js';
import {
  adjustWeightScalesForBias,
  asymmetricZeroPoint,
  quantizeValue,
  quantRange,
  weightParams,
  type QuantizedWeights,
  type WeightScheme,
} from './numeric.js';

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

/** ln(p / (1 − p)): V with σ(V) = p. */
function logit(p: number): number {
  return Math.log(p / (1 - p));
}

/**
 * Learns the rounding of one layer's weights (AdaRound) and returns the integer weights with the
 * given scales and zero points, and how much closer the layer's output came to the float layer's.
 */
export async function adaroundLayer(input: AdaroundLayerInput): Promise<AdaroundResult> {
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

  const batch = Math.min(opts.batchSize, P);
  const evalCount = Math.min(P, Math.max(1, opts.evalPatches));
  const hardRows = f32(count);
  const dequantizeInto = (q: Int32Array): void => {
    for (let m = 0; m < M; m++) {
      const s = rowScale[m]!;
      const z = rowZero[m]!;
      for (let k = 0; k < Kg; k++) hardRows[m * Kg + k] = s * (q[m * Kg + k]! - z);
    }
  };
  const error = await ReconstructionError.create({ outChannels: M, groups: geo.groups, rowLength: Kg, relu }, evalCount, bias);
  let initialMse: number;
  let learned = nearest;
  let learnedMse: number;
  try {
    dequantizeInto(nearest);
    initialMse = await error.measure(hardRows, patches, targets);
    learnedMse = initialMse;
    if (opts.iterations > 0) {
      learned = await optimizeRounding({
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
      learnedMse = await error.measure(hardRows, patches, targets);
    }
  } finally {
    await error.release();
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

/** Adam on V for eq. (21)/(25) + λ·eq. (24), each step one ORT run; returns the hard rounding h(V) ≥ 0.5 as integers. */
async function optimizeRounding(st: OptimizationState): Promise<Int32Array> {
  const { floorQ, rowScale, rowZero, qmin, qmax, geo, bias, relu, patches, targets, P, batch, opts, random } = st;
  const M = geo.outChannels;
  const Kg = geo.rowLength;
  const G = geo.groups;
  const patchLength = Kg * G;
  const count = M * Kg;
  const stepper = await AdaroundStepper.create(
    { outChannels: M, groups: G, rowLength: Kg, batch, relu },
    {
      floorQ,
      rowScale: Float32Array.from(rowScale),
      rowZero: Float32Array.from(rowZero),
      qmin,
      qmax,
      ...(bias ? { bias } : {}),
    },
    st.V,
  );
  try {
    const X = st.f32(G * batch * Kg);
    const T = st.f32(batch * M);
    const order = st.i32(P);
    for (let i = 0; i < P; i++) order[i] = i;
    let cursor = P;
    const T_ = opts.iterations;
    const warmupEnd = Math.floor(opts.warmup * T_);
    for (let t = 0; t < T_; t++) {
      // β from betaStart to betaEnd (the paper: 20 → 2), decayed linearly after the warm-up as in the
      // public implementations (BRECQ, AIMET); no regularizer during the warm-up.
      const regularized = t >= warmupEnd;
      const progress = T_ > warmupEnd ? (t - warmupEnd) / (T_ - warmupEnd) : 1;
      const beta = opts.betaEnd + (opts.betaStart - opts.betaEnd) * Math.max(0, 1 - progress);
      // Minibatch: the next `batch` patches of a seeded permutation of the pool, reshuffled per pass,
      // copied group-major ([G, B, Kg]) with their targets.
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
        const row = order[cursor++]!;
        for (let g = 0; g < G; g++) {
          const from = row * patchLength + g * Kg;
          X.set(patches.subarray(from, from + Kg), (g * batch + b) * Kg);
        }
        T.set(targets.subarray(row * M, (row + 1) * M), b * M);
      }
      await stepper.step(X, T, {
        beta,
        regScale: regularized ? opts.regularization * 2 * beta : 0,
        learningRate: opts.learningRate,
        step: t + 1,
      });
    }
    st.V.set(stepper.V.subarray(0, count));
  } finally {
    await stepper.release();
  }
  const V = st.V;

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
