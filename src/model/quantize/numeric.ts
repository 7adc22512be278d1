/**
 * Quantization arithmetic, reproducing onnxruntime.quantization (quant_utils.py) so that a model
 * quantized here gets the same scales and zero points as one quantized by ORT's Python tool.
 */

export type ActivationType = 'uint8' | 'int8' | 'uint16';
export type QuantType = ActivationType | 'int32';

export interface QuantParams {
  scale: number;
  zeroPoint: number;
}

/** ONNX QuantizeLinear rounds x/scale half to even; Math.round would bias .5 upwards. */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Integer range of a type (ORT get_qmin_qmax_for_qType). Symmetric ranges drop the most negative
 * value so that the zero point lands exactly in the middle.
 */
export function quantRange(type: QuantType, symmetric = false): { qmin: number; qmax: number } {
  switch (type) {
    case 'uint8':
      return symmetric ? { qmin: 0, qmax: 254 } : { qmin: 0, qmax: 255 };
    case 'int8':
      return symmetric ? { qmin: -127, qmax: 127 } : { qmin: -128, qmax: 127 };
    case 'uint16':
      return symmetric ? { qmin: 0, qmax: 65534 } : { qmin: 0, qmax: 65535 };
    case 'int32':
      return symmetric ? { qmin: -2147483647, qmax: 2147483647 } : { qmin: -2147483648, qmax: 2147483647 };
  }
}

/** Smallest positive normal float32 (numpy finfo(float32).tiny). */
const FLOAT32_TINY = 1.1754943508222875e-38;

/**
 * ORT compute_scale_zp: widen the range to include 0 (so 0 is exactly representable, which padding
 * and ReLU need), optionally make it symmetric, then scale = range / steps in float64, stored as
 * float32. A degenerate range (all zeros) gives scale 1, zero point 0, as ORT does.
 */
export function computeScaleZeroPoint(
  rmin: number,
  rmax: number,
  qmin: number,
  qmax: number,
  symmetric: boolean,
  minRealRange?: number,
): QuantParams {
  if (!Number.isFinite(rmin) || !Number.isFinite(rmax)) {
    throw new Error(`cannot quantize a range that is not finite: [${rmin}, ${rmax}]`);
  }
  if (rmin > rmax) throw new Error(`invalid range: min ${rmin} > max ${rmax}`);
  if (qmin >= qmax) throw new Error(`invalid integer range: [${qmin}, ${qmax}]`);
  let lo = Math.min(Math.fround(rmin), 0);
  let hi = Math.max(Math.fround(rmax), 0);
  if (minRealRange !== undefined) hi = Math.max(hi, lo + minRealRange);
  if (symmetric) {
    const absmax = Math.max(Math.abs(lo), Math.abs(hi));
    lo = -absmax;
    hi = absmax;
  }
  const scale = Math.fround((hi - lo) / (qmax - qmin));
  if (scale < FLOAT32_TINY) return { scale: 1, zeroPoint: 0 };
  const zeroPoint = symmetric ? roundHalfEven((qmin + qmax) / 2) : roundHalfEven(qmin - Math.fround(lo / scale));
  return { scale, zeroPoint: Math.min(qmax, Math.max(qmin, zeroPoint)) };
}

/** Activation parameters for a calibrated range (asymmetric unless asked). */
export function activationParams(
  range: { min: number; max: number },
  type: ActivationType,
  symmetric = false,
  minRealRange?: number,
): QuantParams {
  const { qmin, qmax } = quantRange(type, symmetric);
  return computeScaleZeroPoint(range.min, range.max, qmin, qmax, symmetric, minRealRange);
}

/** q = clamp(roundHalfEven(x / scale) + zp), division in float32 as numpy does on float32 arrays. */
export function quantizeValue(x: number, scale: number, zeroPoint: number, qmin: number, qmax: number): number {
  const q = roundHalfEven(Math.fround(x / scale)) + zeroPoint;
  return q < qmin ? qmin : Math.min(q, qmax);
}

export interface PerChannelWeights {
  /** int8 values in the layout of the input. */
  data: Int8Array;
  /** one float32 scale per channel along `axis`. */
  scales: Float32Array;
  /** all zeros: symmetric quantization, which QLinearConv's per-channel path requires. */
  zeroPoints: Int8Array;
  axis: number;
}

/** Number of channels along `axis` and the stride structure to visit them. */
function channelLayout(dims: readonly number[], axis: number): { channels: number; inner: number; outer: number } {
  if (axis < 0 || axis >= dims.length) throw new Error(`axis ${axis} out of range for dims [${dims.join(',')}]`);
  const channels = dims[axis]!;
  let inner = 1;
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i]!;
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i]!;
  return { channels, inner, outer };
}

/** Per-channel absolute maxima (the symmetric range of each channel). */
export function channelAbsMax(values: Float32Array, dims: readonly number[], axis: number): Float64Array {
  const { channels, inner, outer } = channelLayout(dims, axis);
  const absmax = new Float64Array(channels);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const base = (o * channels + c) * inner;
      let m = absmax[c]!;
      for (let i = 0; i < inner; i++) {
        const v = Math.abs(values[base + i]!);
        if (v > m) m = v;
      }
      absmax[c] = m;
    }
  }
  return absmax;
}

/** Symmetric int8 scales per channel, as ORT computes them from each channel's min/max. */
export function perChannelWeightScales(values: Float32Array, dims: readonly number[], axis: number): Float32Array {
  const absmax = channelAbsMax(values, dims, axis);
  const { qmin, qmax } = quantRange('int8', true);
  const scales = new Float32Array(absmax.length);
  for (let c = 0; c < absmax.length; c++) {
    scales[c] = computeScaleZeroPoint(-absmax[c]!, absmax[c]!, qmin, qmax, true).scale;
  }
  return scales;
}

/** Quantize a weight tensor to int8 with the given per-channel scales (zero points 0). */
export function quantizePerChannel(values: Float32Array, dims: readonly number[], axis: number, scales: Float32Array): PerChannelWeights {
  const { channels, inner, outer } = channelLayout(dims, axis);
  if (scales.length !== channels) throw new Error(`expected ${channels} scales, got ${scales.length}`);
  const data = new Int8Array(values.length);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const base = (o * channels + c) * inner;
      const s = scales[c]!;
      for (let i = 0; i < inner; i++) data[base + i] = quantizeValue(values[base + i]!, s, 0, -128, 127);
    }
  }
  return { data, scales, zeroPoints: new Int8Array(channels), axis };
}

export type WeightType = 'int8' | 'uint8';

/** How a weight tensor is quantized. Per-channel is along the output-channel axis. */
export interface WeightScheme {
  type: WeightType;
  symmetric: boolean;
  perChannel: boolean;
}

export interface QuantizedWeights {
  data: Int8Array | Uint8Array;
  /** one per channel, or one for the tensor */
  scales: Float32Array;
  zeroPoints: Int8Array | Uint8Array;
}

/**
 * Weight scales and zero points for a scheme (ORT quantize_data on the whole tensor, or on each
 * channel): the range is widened to include 0, then to `minRealRange` if narrower.
 */
export function weightParams(
  values: Float32Array,
  dims: readonly number[],
  axis: number,
  scheme: WeightScheme,
  minRealRange?: number,
): { scales: Float32Array; zeroPoints: number[]; mins: Float64Array } {
  const { qmin, qmax } = quantRange(scheme.type, scheme.symmetric);
  const { channels, inner, outer } = scheme.perChannel ? channelLayout(dims, axis) : { channels: 1, inner: values.length, outer: 1 };
  const mins = new Float64Array(channels).fill(Infinity);
  const maxs = new Float64Array(channels).fill(-Infinity);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const base = (o * channels + c) * inner;
      let mn = mins[c]!;
      let mx = maxs[c]!;
      for (let i = 0; i < inner; i++) {
        const v = values[base + i]!;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
      }
      mins[c] = mn;
      maxs[c] = mx;
    }
  }
  const scales = new Float32Array(channels);
  const zeroPoints: number[] = [];
  for (let c = 0; c < channels; c++) {
    const p = computeScaleZeroPoint(mins[c]!, maxs[c]!, qmin, qmax, scheme.symmetric, minRealRange);
    scales[c] = p.scale;
    zeroPoints.push(p.zeroPoint);
  }
  return { scales, zeroPoints, mins };
}

/**
 * Zero point of an asymmetric weight after its scale was raised (so the int32 bias fits): the
 * tensor minimum still maps to qmin, as computeScaleZeroPoint does.
 */
export function asymmetricZeroPoint(rmin: number, scale: number, type: WeightType): number {
  const { qmin, qmax } = quantRange(type);
  const zp = roundHalfEven(qmin - Math.fround(Math.min(Math.fround(rmin), 0) / scale));
  return Math.min(qmax, Math.max(qmin, zp));
}

/** Quantizes a weight tensor with per-channel (length = channels along `axis`) or per-tensor (length 1) parameters. */
export function quantizeWeights(
  values: Float32Array,
  dims: readonly number[],
  axis: number,
  scheme: WeightScheme,
  scales: Float32Array,
  zeroPoints: readonly number[],
): QuantizedWeights {
  const { qmin, qmax } = quantRange(scheme.type, scheme.symmetric);
  const { channels, inner, outer } = scheme.perChannel ? channelLayout(dims, axis) : { channels: 1, inner: values.length, outer: 1 };
  if (scales.length !== channels || zeroPoints.length !== channels) {
    throw new Error(`expected ${channels} scales and zero points, got ${scales.length} and ${zeroPoints.length}`);
  }
  const data = scheme.type === 'int8' ? new Int8Array(values.length) : new Uint8Array(values.length);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const base = (o * channels + c) * inner;
      const s = scales[c]!;
      const z = zeroPoints[c]!;
      for (let i = 0; i < inner; i++) data[base + i] = quantizeValue(values[base + i]!, s, z, qmin, qmax);
    }
  }
  const zp = scheme.type === 'int8' ? Int8Array.from(zeroPoints) : Uint8Array.from(zeroPoints);
  return { data, scales, zeroPoints: zp };
}

const INT32_MAX = 2147483647;
const INT32_MIN = -2147483648;

/**
 * ORT _adjust_weight_scale_for_int32_bias: when s_in × s_w is so small that bias/(s_in × s_w)
 * would not fit in int32, raise that channel's weight scale just enough (×1.0001 margin).
 * Returns the (possibly) raised scales and which channels changed.
 */
export function adjustWeightScalesForBias(
  bias: Float32Array,
  inputScale: number,
  weightScales: Float32Array,
): { scales: Float32Array; adjusted: number[] } {
  if (bias.length !== weightScales.length && weightScales.length !== 1) {
    throw new Error(`bias has ${bias.length} values but there are ${weightScales.length} weight scales`);
  }
  const qrange = INT32_MAX - (INT32_MIN + 1);
  const scales = Float32Array.from(weightScales);
  const adjusted: number[] = [];
  const perTensorAbsMax = weightScales.length === 1 ? bias.reduce((m, b) => Math.max(m, Math.abs(b)), 0) : 0;
  for (let c = 0; c < scales.length; c++) {
    const absmax = weightScales.length === 1 ? perTensorAbsMax : Math.abs(bias[c]!);
    const smallestValid = (1.0001 * 2 * absmax) / qrange;
    const candidate = inputScale * scales[c]!;
    if (candidate > 0 && candidate < smallestValid) {
      scales[c] = Math.fround(scales[c]! * (smallestValid / candidate));
      adjusted.push(c);
    }
  }
  return { scales, adjusted };
}

/** int32 bias with scale s_in × s_w[c] and zero point 0 (what QLinearConv/QGemm add to the accumulator). */
export function quantizeBias(
  bias: Float32Array,
  inputScale: number,
  weightScales: Float32Array,
): { data: Int32Array; scales: Float32Array } {
  const perChannel = weightScales.length !== 1;
  if (perChannel && weightScales.length !== bias.length) {
    throw new Error(`bias has ${bias.length} values but there are ${weightScales.length} weight scales`);
  }
  const scales = new Float32Array(weightScales.length);
  for (let c = 0; c < weightScales.length; c++) scales[c] = Math.fround(inputScale * weightScales[c]!);
  const data = new Int32Array(bias.length);
  for (let i = 0; i < bias.length; i++) {
    const s = scales[perChannel ? i : 0]!;
    // Bias uses float64 division (ORT: bias_data / bias_scale in float64) and saturates.
    const q = roundHalfEven(bias[i]! / s);
    data[i] = q > INT32_MAX ? INT32_MAX : Math.max(q, INT32_MIN);
  }
  return { data, scales };
}

/**
 * Signal-to-quantization-noise ratio in dB: 10·log10(Σref² / Σ(ref−test)²).
 * Identical signals give Infinity; callers aggregate sums over many tensors with SqnrAccumulator.
 */
export class SqnrAccumulator {
  private signal = 0;
  private noise = 0;

  add(ref: ArrayLike<number>, test: ArrayLike<number>): void {
    if (ref.length !== test.length) throw new Error(`SQNR needs equal lengths, got ${ref.length} and ${test.length}`);
    for (let i = 0; i < ref.length; i++) {
      const r = ref[i]!;
      const d = r - test[i]!;
      this.signal += r * r;
      this.noise += d * d;
    }
  }

  get db(): number {
    if (this.noise === 0) return Infinity;
    if (this.signal === 0) return -Infinity;
    return 10 * Math.log10(this.signal / this.noise);
  }
}

export function sqnrDb(ref: ArrayLike<number>, test: ArrayLike<number>): number {
  const acc = new SqnrAccumulator();
  acc.add(ref, test);
  return acc.db;
}
