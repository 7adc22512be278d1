import { describe, expect, it } from 'vitest';
import {
  adjustWeightScalesForBias,
  computeScaleZeroPoint,
  perChannelWeightScales,
  quantizeBias,
  quantizePerChannel,
  quantizeValue,
  quantRange,
  roundHalfEven,
  sqnrDb,
} from '../../src/model/quantize/numeric.js';
import { AbsHistogram, entropyRange, klDivergence, percentileRange, SignedHistogram } from '../../src/model/quantize/histogram.js';
import { calibrate } from '../../src/model/quantize/calibrate.js';
import { DataType, makeModel, makeNode, makeValueInfo, onnx } from '../../src/model/onnx.js';
import { lcg } from './quantize-fixtures.js';

describe('roundHalfEven', () => {
  it('rounds ties to the even neighbour in both directions', () => {
    expect(roundHalfEven(0.5)).toBe(0);
    expect(roundHalfEven(1.5)).toBe(2);
    expect(roundHalfEven(2.5)).toBe(2);
    expect(roundHalfEven(-0.5) === 0).toBe(true);
    expect(roundHalfEven(-1.5)).toBe(-2);
    expect(roundHalfEven(-2.5)).toBe(-2);
  });
  it('rounds non-ties to nearest', () => {
    expect(roundHalfEven(2.4999)).toBe(2);
    expect(roundHalfEven(2.5001)).toBe(3);
    expect(roundHalfEven(-2.5001)).toBe(-3);
  });
});

describe('computeScaleZeroPoint (ORT compute_scale_zp)', () => {
  it('uint8 asymmetric: scale = range/255, zero point ties round to even', () => {
    // range 255 wide → scale exactly 1; zp = round(0 - rmin/1)
    expect(computeScaleZeroPoint(-0.5, 254.5, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 0 });
    expect(computeScaleZeroPoint(-1.5, 253.5, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 2 });
    expect(computeScaleZeroPoint(-2.5, 252.5, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 2 });
  });
  it('widens the range to include zero', () => {
    // [3, 255] → [0, 255]: scale 1, zp 0
    expect(computeScaleZeroPoint(3, 255, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 0 });
  });
  it('negative-only range puts the zero point at qmax', () => {
    expect(computeScaleZeroPoint(-255, -3, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 255 });
    expect(computeScaleZeroPoint(-2, -1, 0, 255, false)).toEqual({ scale: Math.fround(2 / 255), zeroPoint: 255 });
  });
  it('all-zero tensor gives scale 1, zero point 0', () => {
    expect(computeScaleZeroPoint(0, 0, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 0 });
    expect(computeScaleZeroPoint(0, 0, -127, 127, true)).toEqual({ scale: 1, zeroPoint: 0 });
  });
  it('symmetric int8 uses ±absmax over 254 steps with zero point 0', () => {
    expect(computeScaleZeroPoint(-1, 2.54, -127, 127, true)).toEqual({ scale: Math.fround(5.08 / 254), zeroPoint: 0 });
  });
  it('symmetric uint8 puts the zero point at 127', () => {
    const { qmin, qmax } = quantRange('uint8', true);
    expect(computeScaleZeroPoint(-1, 1, qmin, qmax, true).zeroPoint).toBe(127);
  });
  it('rejects non-finite and inverted ranges with a clear error', () => {
    expect(() => computeScaleZeroPoint(NaN, 1, 0, 255, false)).toThrow(/not finite/);
    expect(() => computeScaleZeroPoint(2, 1, 0, 255, false)).toThrow(/min 2 > max 1/);
  });
});

describe('quantizeValue', () => {
  it('rounds x/scale half to even, adds the zero point and saturates', () => {
    expect(quantizeValue(2.5, 1, 0, 0, 255)).toBe(2);
    expect(quantizeValue(3.5, 1, 0, 0, 255)).toBe(4);
    expect(quantizeValue(-0.5, 1, 10, 0, 255)).toBe(10);
    expect(quantizeValue(1000, 1, 0, 0, 255)).toBe(255);
    expect(quantizeValue(-1000, 1, 0, -128, 127)).toBe(-128);
  });
});

describe('per-channel weights', () => {
  it('gives each output channel its own symmetric scale, zero points all 0', () => {
    // 2 output channels × 3 values
    const w = new Float32Array([0.5, -1.27, 0.1, 0.02, 0.01, -0.03]);
    const scales = perChannelWeightScales(w, [2, 3], 0);
    expect(scales[0]).toBe(Math.fround(2.54 / 254));
    expect(scales[1]).toBe(Math.fround(0.06 / 254));
    const q = quantizePerChannel(w, [2, 3], 0, scales);
    expect(Array.from(q.zeroPoints)).toEqual([0, 0]);
    expect(q.data[1]).toBe(-127);
    expect(q.data[5]).toBe(-127);
    expect(q.data[0]).toBe(50);
  });
  it('quantizes along axis 1 (Gemm without transB)', () => {
    const w = new Float32Array([1, 10, -2, 20]); // [2,2], channel = column
    const scales = perChannelWeightScales(w, [2, 2], 1);
    expect(scales[0]).toBe(Math.fround(4 / 254));
    expect(scales[1]).toBe(Math.fround(40 / 254));
  });
});

describe('int32 bias', () => {
  it('uses scale s_in × s_w per channel and zero point 0', () => {
    const { data, scales } = quantizeBias(new Float32Array([1, -0.5]), 0.5, new Float32Array([0.25, 1]));
    expect(Array.from(scales)).toEqual([0.125, 0.5]);
    expect(Array.from(data)).toEqual([8, -1]);
  });
  it('raises the weight scale of a channel whose bias would overflow int32', () => {
    const bias = new Float32Array([1e6, 1]);
    const weightScales = new Float32Array([1e-8, 1e-8]);
    const inputScale = 1e-4;
    // 1e6 / (1e-4 × 1e-8) = 1e18 ≫ 2^31: channel 0 must be raised, channel 1 (1e12… also overflows)
    const { scales, adjusted } = adjustWeightScalesForBias(bias, inputScale, weightScales);
    expect(adjusted).toEqual([0, 1]);
    const q = quantizeBias(bias, inputScale, scales);
    for (const v of q.data) expect(Math.abs(v)).toBeLessThan(2 ** 31 - 1);
    // and only by the margin needed: the value uses nearly the whole int32 range
    expect(Math.abs(q.data[0]!)).toBeGreaterThan(2 ** 31 * 0.99);
  });
  it('leaves scales alone when the bias fits', () => {
    const { scales, adjusted } = adjustWeightScalesForBias(new Float32Array([1, 2]), 0.01, new Float32Array([0.01, 0.02]));
    expect(adjusted).toEqual([]);
    expect(Array.from(scales)).toEqual([Math.fround(0.01), Math.fround(0.02)]);
  });
});

describe('sqnrDb', () => {
  it('is Infinity for identical signals and 20 dB for 10 % noise amplitude', () => {
    expect(sqnrDb([1, 2, 3], [1, 2, 3])).toBe(Infinity);
    expect(sqnrDb([1, 1, 1, 1], [1.1, 0.9, 1.1, 0.9])).toBeCloseTo(20, 6);
  });
});

describe('histograms', () => {
  it('percentile cuts the rare outliers of an |x| histogram', () => {
    const h = new AbsHistogram(2048);
    const values = new Float32Array(100_000);
    for (let i = 0; i < values.length; i++) values[i] = (i % 1000) / 1000; // uniform [0, 1)
    values[0] = 50; // one outlier
    h.add(values);
    const r = percentileRange(h.snapshot(), 99.9);
    expect(r.min).toBe(0);
    expect(r.max).toBeGreaterThan(0.95);
    expect(r.max).toBeLessThan(1.1);
    // 100th percentile keeps the outlier
    expect(percentileRange(h.snapshot(), 100).max).toBe(50);
  });
  it('keeps counts when the range grows (bins merge, nothing is lost)', () => {
    const h = new AbsHistogram(16);
    h.add([0.1, 0.2, 0.9]);
    h.add([3.5]);
    const s = h.snapshot();
    expect(s.counts.reduce((a, b) => a + b, 0)).toBe(4);
    expect(s.hi).toBeGreaterThanOrEqual(3.5);
    expect(s.max).toBe(3.5);
    const g = new SignedHistogram(16);
    g.add([-1, 0.5, 1]);
    g.add([-7]);
    const t = g.snapshot();
    expect(t.counts.reduce((a, b) => a + b, 0)).toBe(4);
    expect(t.lo).toBeLessThanOrEqual(-7);
    expect(t.min).toBe(-7);
  });
  it('KL divergence is 0 for equal distributions and positive otherwise', () => {
    expect(klDivergence([1, 2, 3], [2, 4, 6])).toBeCloseTo(0, 12);
    expect(klDivergence([1, 0], [0.5, 0.5])).toBeCloseTo(Math.log(2), 12);
  });
  it('entropy clips a long sparse tail but keeps the bulk of a distribution', () => {
    const h = new SignedHistogram(2048);
    // bulk in [0, 1], a handful of far outliers up to 20
    const values = new Float32Array(200_000);
    let seed = 7;
    for (let i = 0; i < values.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      values[i] = seed / 2 ** 32; // uniform [0, 1)
    }
    for (let i = 0; i < 20; i++) values[i] = 2 + i * 0.9;
    h.add(values);
    const r = entropyRange(h.snapshot(), 128);
    // clamped to the observed minimum (≈0), not the negative symmetric threshold
    expect(r.min).toBeGreaterThanOrEqual(0);
    expect(r.min).toBeLessThan(0.001);
    expect(r.max).toBeGreaterThan(0.9);
    expect(r.max).toBeLessThan(10);
  });
});

describe('entropy calibration models the activation type', () => {
  /** One Relu: `x` (a graph input) is signed, `y` (a ReLU output) never negative. */
  const reluModel = makeModel({
    graph: onnx.GraphProto.create({
      name: 'relu',
      node: [makeNode('Relu', ['x'], ['y'])],
      input: [makeValueInfo('x', DataType.FLOAT, [1, 4096])],
      output: [makeValueInfo('y', DataType.FLOAT, [1, 4096])],
    }),
    opset: 13,
  });
  const rand = lcg(11);
  // Laplace-distributed pre-activations: the heavy tail real conv outputs have.
  const laplace = (): number => (rand() < 0.5 ? -1 : 1) * -Math.log(1 - rand());
  const inputs = Array.from({ length: 16 }, () => Float32Array.from({ length: 4096 }, laplace));
  async function* feed(): AsyncGenerator<Float32Array> {
    yield* inputs;
  }
  const histogramOf = (f: (v: number) => number): SignedHistogram => {
    const h = new SignedHistogram(2048);
    for (const x of inputs) h.add(Float32Array.from(x, f));
    return h;
  };
  const opts = { method: 'entropy' as const, inputName: 'x', inputDims: [1, 4096] };

  it('searches with the levels an 8-bit asymmetric type has over the window: 256, or 512 for a ReLU output', async () => {
    // The histogram window is [-T, T]; uint8 spends its 256 levels on [0, T] when nothing is
    // negative. ORT's fixed 128 bins would model a quantizer 4× coarser than the one the ReLU gets.
    const { ranges } = await calibrate(reluModel, ['x', 'y'], feed(), opts);
    expect(ranges.get('x')).toEqual(entropyRange(histogramOf((v) => v).snapshot(), 256));
    expect(ranges.get('y')).toEqual(entropyRange(histogramOf((v) => Math.max(0, v)).snapshot(), 512));
    expect(ranges.get('y')).not.toEqual(entropyRange(histogramOf((v) => Math.max(0, v)).snapshot(), 128));
    expect(ranges.get('y')!.min).toBe(0);
  });

  it('clips nothing for 16-bit activations (as many levels as histogram bins)', async () => {
    const { ranges } = await calibrate(reluModel, ['x', 'y'], feed(), { ...opts, levels: 65536 });
    const all = inputs.flatMap((x) => Array.from(x));
    expect(ranges.get('x')).toEqual({ min: Math.min(...all), max: Math.max(...all) });
    expect(ranges.get('y')).toEqual({ min: 0, max: Math.max(...all) });
  });
});
