import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { DataType, encodeModel, makeModel, makeNode, makeTensor, makeValueInfo, onnx } from '../../src/model/onnx.js';
import { adaroundLayer, layerWeightParams, type AdaroundLayerInput, type ConvLayerSpec } from '../../src/model/quantize/adaround.js';
import { activationParams, quantizeWeights, quantRange, weightParams, type WeightScheme } from '../../src/model/quantize/numeric.js';
import { emitQdq, planQdq } from '../../src/model/quantize/qdq.js';
import { mulberry32 } from '../../src/util/index.js';
import { Adam, Conv, GlobalAvgPool, Linear, Relu, Sequential, softmaxCrossEntropy } from '../../scripts/train-tiny-cnn/nn.js';

const S8_PER_CHANNEL: WeightScheme = { type: 'int8', symmetric: true, perChannel: true };
const U8_PER_TENSOR: WeightScheme = { type: 'uint8', symmetric: false, perChannel: false };

function normal(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** Conv weights as BN folding leaves them: He-scaled normals with a different gain per output channel. */
function convWeights(M: number, rowLength: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const g = normal(rand);
  const w = new Float32Array(M * rowLength);
  const std = Math.sqrt(2 / rowLength);
  for (let m = 0; m < M; m++) {
    const gain = 0.4 + 1.2 * rand();
    for (let k = 0; k < rowLength; k++) w[m * rowLength + k] = g() * std * gain;
  }
  return w;
}

/** Post-ReLU feature maps with spatial correlation (a blurred normal field, shifted, clipped at 0). */
function featureMaps(C: number, H: number, W: number, count: number, seed: number): Float32Array[] {
  const g = normal(mulberry32(seed));
  const out: Float32Array[] = [];
  for (let n = 0; n < count; n++) {
    const raw = Float32Array.from({ length: C * H * W }, g);
    const x = new Float32Array(C * H * W);
    for (let c = 0; c < C; c++) {
      for (let y = 0; y < H; y++) {
        for (let xx = 0; xx < W; xx++) {
          let s = 0;
          for (let dy = -1; dy <= 1; dy++) {
            for (let dx = -1; dx <= 1; dx++) {
              const iy = Math.min(H - 1, Math.max(0, y + dy));
              const ix = Math.min(W - 1, Math.max(0, xx + dx));
              s += raw[(c * H + iy) * W + ix]!;
            }
          }
          x[(c * H + y) * W + xx] = Math.max(0, s / 3 + 0.2);
        }
      }
    }
    out.push(x);
  }
  return out;
}

/** Direct (no im2col) ONNX Conv for one sample, with group, strides, pads [t, l, b, r] and dilations. */
function referenceConv(
  x: Float32Array,
  w: Float32Array,
  dims: readonly number[],
  bias: Float32Array | undefined,
  spec: ConvLayerSpec,
): Float32Array {
  const [M, Cg, kH, kW] = dims as [number, number, number, number];
  const [, H, W] = spec.inputShape;
  const group = spec.group ?? 1;
  const [sH, sW] = spec.strides ?? [1, 1];
  const [pT, pL, pB, pR] = spec.pads ?? [0, 0, 0, 0];
  const [dH, dW] = spec.dilations ?? [1, 1];
  const oH = Math.floor((H + pT + pB - dH * (kH - 1) - 1) / sH) + 1;
  const oW = Math.floor((W + pL + pR - dW * (kW - 1) - 1) / sW) + 1;
  const y = new Float32Array(M * oH * oW);
  const perGroup = M / group;
  for (let m = 0; m < M; m++) {
    const g = Math.floor(m / perGroup);
    for (let oy = 0; oy < oH; oy++) {
      for (let ox = 0; ox < oW; ox++) {
        let s = bias ? bias[m]! : 0;
        for (let c = 0; c < Cg; c++) {
          for (let ky = 0; ky < kH; ky++) {
            for (let kx = 0; kx < kW; kx++) {
              const iy = oy * sH - pT + ky * dH;
              const ix = ox * sW - pL + kx * dW;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              s += w[((m * Cg + c) * kH + ky) * kW + kx]! * x[((g * Cg + c) * H + iy) * W + ix]!;
            }
          }
        }
        y[(m * oH + oy) * oW + ox] = s;
      }
    }
  }
  return y;
}

/** The same Conv in onnxruntime-node. */
async function ortConv(
  x: Float32Array[],
  w: Float32Array,
  dims: number[],
  bias: Float32Array,
  spec: ConvLayerSpec,
): Promise<Float32Array[]> {
  const [C, H, W] = spec.inputShape;
  const graph = onnx.GraphProto.create({
    name: 'conv',
    node: [
      makeNode('Conv', ['x', 'w', 'b'], ['y'], {
        kernel_shape: dims.slice(2),
        group: spec.group ?? 1,
        strides: [...(spec.strides ?? [1, 1])],
        pads: [...(spec.pads ?? [0, 0, 0, 0])],
        dilations: [...(spec.dilations ?? [1, 1])],
      }),
    ],
    initializer: [makeTensor('w', DataType.FLOAT, dims, w), makeTensor('b', DataType.FLOAT, [bias.length], bias)],
    input: [makeValueInfo('x', DataType.FLOAT, [1, C, H, W])],
    output: [makeValueInfo('y', DataType.FLOAT, [1, dims[0]!, 'h', 'w'])],
  });
  const session = await ort.InferenceSession.create(encodeModel(makeModel({ graph, opset: 13 })), { logSeverityLevel: 3 });
  const out: Float32Array[] = [];
  for (const sample of x) {
    const r = await session.run({ x: new ort.Tensor('float32', sample, [1, C, H, W]) });
    out.push(Float32Array.from(r.y!.data as Float32Array));
  }
  await session.release();
  return out;
}

/** Dequantized weights (q − zp)·s, the channel of index i given by `channelOf`. */
function dequantize(
  q: Int8Array | Uint8Array,
  scales: Float32Array,
  zeroPoints: readonly number[],
  channelOf: (i: number) => number,
): Float32Array {
  return Float32Array.from(q, (v, i) => {
    const c = scales.length === 1 ? 0 : channelOf(i);
    return (v - zeroPoints[c]!) * scales[c]!;
  });
}

function mse(a: readonly Float32Array[], b: readonly Float32Array[], relu = false): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < a[i]!.length; j++) {
      const x = relu ? Math.max(0, a[i]![j]!) : a[i]![j]!;
      const y = relu ? Math.max(0, b[i]![j]!) : b[i]![j]!;
      s += (x - y) ** 2;
      n++;
    }
  }
  return s / n;
}

/** Every integer is floor(w/s)+zp or one more (float32 division, as quantizeValue), inside the range. */
function expectFloorOrCeil(
  q: Int8Array | Uint8Array,
  w: Float32Array,
  scales: Float32Array,
  zeroPoints: readonly number[],
  scheme: WeightScheme,
  channelOf: (i: number) => number,
): void {
  const { qmin, qmax } = quantRange(scheme.type, scheme.symmetric);
  let bad = 0;
  for (let i = 0; i < q.length; i++) {
    const c = scales.length === 1 ? 0 : channelOf(i);
    const fl = Math.floor(Math.fround(w[i]! / scales[c]!)) + zeroPoints[c]!;
    const lo = Math.min(Math.max(fl, qmin), qmax);
    const hi = Math.min(Math.max(fl + 1, qmin), qmax);
    if (q[i]! < qmin || q[i]! > qmax || (q[i] !== lo && q[i] !== hi)) bad++;
  }
  expect(bad).toBe(0);
}

describe('adaroundLayer on a conv layer', () => {
  const spec: ConvLayerSpec = { op: 'Conv', inputShape: [16, 10, 10], pads: [1, 1, 1, 1] };
  const dims = [24, 16, 3, 3];
  const w = convWeights(24, 144, 11);
  const bias = Float32Array.from({ length: 24 }, (_, i) => 0.05 * Math.sin(i));
  const train = featureMaps(16, 10, 10, 12, 21);
  const held = featureMaps(16, 10, 10, 6, 22);
  const { scales, zeroPoints } = layerWeightParams(w, dims, 0, S8_PER_CHANNEL);
  const input: AdaroundLayerInput = {
    layer: spec,
    weights: w,
    weightDims: dims,
    bias,
    scheme: S8_PER_CHANNEL,
    scales,
    zeroPoints,
    inputs: train,
    options: { iterations: 600, batchSize: 64 },
  };
  const rowLength = 144;
  const channelOf = (i: number): number => Math.floor(i / rowLength);

  it('reconstructs the output better than round-to-nearest, on held-out samples too, with floor/ceil integers in range', async () => {
    const result = await adaroundLayer(input);
    const nearest = quantizeWeights(w, dims, 0, S8_PER_CHANNEL, scales, zeroPoints).data;
    expectFloorOrCeil(result.data, w, scales, zeroPoints, S8_PER_CHANNEL, channelOf);
    expect(result.stats.keptNearest).toBe(false);
    expect(result.stats.changed).toBeGreaterThan(0);
    expect(result.stats.finalMse).toBeLessThan(0.8 * result.stats.initialMse);
    const ref = held.map((x) => referenceConv(x, w, dims, bias, spec));
    const errNearest = mse(
      held.map((x) => referenceConv(x, dequantize(nearest, scales, zeroPoints, channelOf), dims, bias, spec)),
      ref,
    );
    const errAda = mse(
      held.map((x) => referenceConv(x, dequantize(result.data, scales, zeroPoints, channelOf), dims, bias, spec)),
      ref,
    );
    expect(errAda).toBeLessThan(0.9 * errNearest);
    expect(result.stats.memoryBytes).toBeGreaterThan(0);
  });

  it('is deterministic', async () => {
    const a = await adaroundLayer({ ...input, options: { ...input.options, iterations: 100 } });
    const b = await adaroundLayer({ ...input, options: { ...input.options, iterations: 100 } });
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
    expect(a.stats.finalMse).toBe(b.stats.finalMse);
    const other = await adaroundLayer({ ...input, options: { ...input.options, iterations: 100, seed: 2 } });
    expect(other.stats.initialMse).not.toBe(a.stats.initialMse); // another pool order, so another evaluation subset
  });

  it('with 0 iterations returns exactly what quantizeWeights (and so qdq.ts) writes', async () => {
    const result = await adaroundLayer({ ...input, options: { iterations: 0 } });
    const nearest = quantizeWeights(w, dims, 0, S8_PER_CHANNEL, scales, zeroPoints).data;
    expect([...result.data]).toEqual([...nearest]);
    expect(result.stats.finalMse).toBe(result.stats.initialMse);
    expect(result.stats.changed).toBe(0);
  });

  it('bounds the unfolded pool by maxPatches and maxPoolBytes', async () => {
    const small = await adaroundLayer({ ...input, options: { iterations: 0, maxPatches: 300 } });
    const large = await adaroundLayer({ ...input, options: { iterations: 0, maxPatches: 1200 } });
    expect(small.stats.patches).toBe(300);
    expect(large.stats.patches).toBe(1200);
    // The pool is patches × (C·kH·kW + M) floats; the rest does not depend on it.
    expect(large.stats.memoryBytes - small.stats.memoryBytes).toBe(900 * (144 + 24) * 4);
    const capped = await adaroundLayer({ ...input, options: { iterations: 0, maxPatches: 1200, maxPoolBytes: 500 * (144 + 24) * 4 } });
    expect(capped.stats.patches).toBe(500);
  });

  it('with the Relu in the reconstruction (eq. 25) beats nearest after the Relu', async () => {
    const result = await adaroundLayer({ ...input, activation: 'relu' });
    expect(result.stats.keptNearest).toBe(false);
    const nearest = quantizeWeights(w, dims, 0, S8_PER_CHANNEL, scales, zeroPoints).data;
    const ref = held.map((x) => referenceConv(x, w, dims, bias, spec));
    const errNearest = mse(
      held.map((x) => referenceConv(x, dequantize(nearest, scales, zeroPoints, channelOf), dims, bias, spec)),
      ref,
      true,
    );
    const errAda = mse(
      held.map((x) => referenceConv(x, dequantize(result.data, scales, zeroPoints, channelOf), dims, bias, spec)),
      ref,
      true,
    );
    expect(errAda).toBeLessThan(0.9 * errNearest);
  });
});

describe('adaroundLayer conv geometry', () => {
  const cases: { name: string; spec: ConvLayerSpec; dims: number[] }[] = [
    {
      name: 'grouped, stride 2, asymmetric pads',
      spec: { op: 'Conv', inputShape: [8, 9, 11], group: 2, strides: [2, 2], pads: [1, 0, 2, 1] },
      dims: [6, 4, 3, 3],
    },
    { name: 'depthwise 3×3, pad 1', spec: { op: 'Conv', inputShape: [6, 8, 8], group: 6, pads: [1, 1, 1, 1] }, dims: [6, 1, 3, 3] },
    {
      name: 'dilated 1×3 (rectangular), strides 1×2',
      spec: { op: 'Conv', inputShape: [4, 7, 12], strides: [1, 2], pads: [0, 2, 0, 2], dilations: [2, 2] },
      dims: [5, 4, 1, 3],
    },
  ];
  for (const c of cases) {
    it(`${c.name}: patches match onnxruntime's Conv`, async () => {
      const rowLength = c.dims[1]! * c.dims[2]! * c.dims[3]!;
      const w = convWeights(c.dims[0]!, rowLength, 5);
      const bias = Float32Array.from({ length: c.dims[0]! }, (_, i) => 0.1 * i - 0.2);
      const [C, H, W] = c.spec.inputShape;
      const inputs = featureMaps(C, H, W, 3, 9);
      const { scales, zeroPoints } = weightParams(w, c.dims, 0, S8_PER_CHANNEL);
      const nearest = quantizeWeights(w, c.dims, 0, S8_PER_CHANNEL, scales, zeroPoints).data;
      const channelOf = (i: number): number => Math.floor(i / rowLength);
      // Targets = ORT's output with the round-to-nearest weights: if every patch and output index is
      // right, round-to-nearest reconstructs them exactly.
      const ortNearest = await ortConv(inputs, dequantize(nearest, scales, zeroPoints, channelOf), c.dims, bias, c.spec);
      const base = { layer: c.spec, weights: w, weightDims: c.dims, bias, scheme: S8_PER_CHANNEL, scales, zeroPoints, inputs };
      const exact = await adaroundLayer({ ...base, targets: ortNearest, options: { iterations: 0 } });
      expect(exact.stats.initialMse).toBeLessThan(1e-12);
      // Targets computed from the float weights equal ORT's float Conv (and the direct reference).
      const ortFloat = await ortConv(inputs, w, c.dims, bias, c.spec);
      for (let n = 0; n < inputs.length; n++) {
        const ref = referenceConv(inputs[n]!, w, c.dims, bias, c.spec);
        for (let i = 0; i < ref.length; i++) expect(ref[i]).toBeCloseTo(ortFloat[n]![i]!, 4);
      }
      const internal = await adaroundLayer({ ...base, options: { iterations: 0 } });
      const given = await adaroundLayer({ ...base, targets: ortFloat, options: { iterations: 0 } });
      expect(internal.stats.initialMse).toBeGreaterThan(0);
      // (ORT's float32 outputs vs the float64 sums kept as float32 targets here)
      expect(Math.abs(given.stats.initialMse - internal.stats.initialMse) / internal.stats.initialMse).toBeLessThan(1e-4);
      // And the optimization works through the same geometry.
      const learned = await adaroundLayer({ ...base, options: { iterations: 300, batchSize: 32 } });
      expectFloorOrCeil(learned.data, w, scales, zeroPoints, S8_PER_CHANNEL, channelOf);
      expect(learned.stats.finalMse).toBeLessThan(learned.stats.initialMse);
    });
  }

  it('rejects inconsistent shapes', async () => {
    const w = new Float32Array(6 * 4 * 9);
    const { scales, zeroPoints } = weightParams(w, [6, 4, 3, 3], 0, S8_PER_CHANNEL);
    const base = { weights: w, weightDims: [6, 4, 3, 3], scheme: S8_PER_CHANNEL, scales, zeroPoints };
    await expect(adaroundLayer({ ...base, layer: { op: 'Conv', inputShape: [8, 5, 5] }, inputs: [new Float32Array(200)] })).rejects.toThrow(
      /group 1/,
    );
    await expect(
      adaroundLayer({ ...base, layer: { op: 'Conv', inputShape: [8, 5, 5], group: 2 }, inputs: [new Float32Array(199)] }),
    ).rejects.toThrow(/199/);
    await expect(
      adaroundLayer({
        ...base,
        scales: scales.subarray(0, 3),
        layer: { op: 'Conv', inputShape: [8, 5, 5], group: 2 },
        inputs: [new Float32Array(200)],
      }),
    ).rejects.toThrow(/6 scales/);
  });
});

describe('adaroundLayer on a Gemm layer', () => {
  const K = 48;
  const N = 20;
  /** Rows with correlated features (a low-rank mixture plus noise, then ReLU), as a pooled feature vector. */
  function rows(count: number, seed: number): Float32Array {
    const g = normal(mulberry32(seed));
    const mix = Float32Array.from({ length: 6 * K }, () => g() * 0.5);
    const out = new Float32Array(count * K);
    for (let r = 0; r < count; r++) {
      const z = Array.from({ length: 6 }, g);
      for (let k = 0; k < K; k++) {
        let s = 0.1 * g();
        for (let j = 0; j < 6; j++) s += z[j]! * mix[j * K + k]!;
        out[r * K + k] = Math.max(0, s + 0.3);
      }
    }
    return out;
  }
  const wNK = convWeights(N, K, 31); // [N, K]: Gemm transB = 1
  const wKN = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wKN[k * N + n] = wNK[n * K + k]!;
  const bias = Float32Array.from({ length: N }, (_, i) => 0.02 * i);
  const train = [rows(300, 41), rows(300, 42)];
  const held = [rows(400, 43)];
  const gemm = (x: Float32Array, w: Float32Array): Float32Array => {
    const count = x.length / K;
    const y = new Float32Array(count * N);
    for (let r = 0; r < count; r++) {
      for (let n = 0; n < N; n++) {
        let s = bias[n]!;
        for (let k = 0; k < K; k++) s += x[r * K + k]! * w[n * K + k]!;
        y[r * N + n] = s;
      }
    }
    return y;
  };

  it('beats round-to-nearest per-channel (transB = 1), on held-out rows too', async () => {
    const { scales, zeroPoints } = layerWeightParams(wNK, [N, K], 0, S8_PER_CHANNEL);
    const result = await adaroundLayer({
      layer: { op: 'Gemm', transB: true },
      weights: wNK,
      weightDims: [N, K],
      bias,
      scheme: S8_PER_CHANNEL,
      scales,
      zeroPoints,
      inputs: train,
      options: { iterations: 600, batchSize: 64 },
    });
    const channelOf = (i: number): number => Math.floor(i / K);
    expectFloorOrCeil(result.data, wNK, scales, zeroPoints, S8_PER_CHANNEL, channelOf);
    expect(result.stats.finalMse).toBeLessThan(0.8 * result.stats.initialMse);
    const nearest = quantizeWeights(wNK, [N, K], 0, S8_PER_CHANNEL, scales, zeroPoints).data;
    const ref = held.map((x) => gemm(x, wNK));
    const errNearest = mse(
      held.map((x) => gemm(x, dequantize(nearest, scales, zeroPoints, channelOf))),
      ref,
    );
    const errAda = mse(
      held.map((x) => gemm(x, dequantize(result.data, scales, zeroPoints, channelOf))),
      ref,
    );
    expect(errAda).toBeLessThan(0.9 * errNearest);
  });

  it('works per-tensor with asymmetric uint8 weights, and [K, N] weights (transB = 0, MatMul) give the same rounding transposed', async () => {
    const { scales, zeroPoints } = layerWeightParams(wNK, [N, K], 0, U8_PER_TENSOR);
    expect(zeroPoints[0]).not.toBe(0);
    const common = { bias, scheme: U8_PER_TENSOR, scales, zeroPoints, inputs: train, options: { iterations: 400, batchSize: 64 } };
    const nk = await adaroundLayer({ ...common, layer: { op: 'Gemm', transB: true }, weights: wNK, weightDims: [N, K] });
    const kn = await adaroundLayer({ ...common, layer: { op: 'Gemm' }, weights: wKN, weightDims: [K, N] });
    const matmul = await adaroundLayer({ ...common, layer: { op: 'MatMul' }, weights: wKN, weightDims: [K, N] });
    expect(nk.data).toBeInstanceOf(Uint8Array);
    expectFloorOrCeil(nk.data, wNK, scales, zeroPoints, U8_PER_TENSOR, () => 0);
    expect(nk.stats.finalMse).toBeLessThan(nk.stats.initialMse);
    const transposed = new Uint8Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) transposed[k * N + n] = nk.data[n * K + k]!;
    expect([...kn.data]).toEqual([...transposed]);
    expect([...matmul.data]).toEqual([...transposed]);
    // 0 iterations: exactly quantizeWeights per-tensor (qdq.ts's uint8 weights).
    const zero = await adaroundLayer({ ...common, options: { iterations: 0 }, layer: { op: 'Gemm' }, weights: wKN, weightDims: [K, N] });
    expect([...zero.data]).toEqual([...quantizeWeights(wKN, [K, N], 1, U8_PER_TENSOR, scales, zeroPoints).data]);
  });
});

describe('adaroundLayer on a trained layer', () => {
  /** 4 classes of 3×12×12 images: bars at 0°, 45°, 90°, 135° at a random phase, colour and noise. */
  function images(count: number, seed: number): { x: Float32Array; labels: number[] } {
    const rand = mulberry32(seed);
    const g = normal(rand);
    const x = new Float32Array(count * 3 * 144);
    const labels: number[] = [];
    for (let n = 0; n < count; n++) {
      const cls = Math.floor(rand() * 4);
      labels.push(cls);
      const phase = rand() * 4;
      const colour = [rand(), rand(), rand()];
      for (let y = 0; y < 12; y++) {
        for (let xx = 0; xx < 12; xx++) {
          const t = [xx, xx + y, y, xx - y][cls]!;
          const on = Math.floor((t + phase + 24) / 2) % 2 === 0 ? 1 : -1;
          for (let c = 0; c < 3; c++) x[((n * 3 + c) * 12 + y) * 12 + xx] = on * (0.5 + colour[c]!) + 0.3 * g();
        }
      }
    }
    return { x, labels };
  }

  it('beats round-to-nearest on the second conv of a small trained CNN, with inputs from the quantized first conv (eq. 25)', async () => {
    const rand = mulberry32(3);
    const conv1 = new Conv('conv1', 3, 8, 3, true, rand);
    const conv2 = new Conv('conv2', 8, 16, 3, true, rand);
    conv1.needInputGrad = false;
    const net = new Sequential([conv1, new Relu(), conv2, new Relu(), new GlobalAvgPool(), new Linear('fc', 16, 4, rand)]);
    const adam = new Adam(net.params());
    const data = images(2000, 4);
    let first = 0;
    let last = 0;
    for (let step = 0; step < 120; step++) {
      const idx = Array.from({ length: 32 }, (_, i) => (step * 32 + i) % 2000);
      const batch = new Float32Array(32 * 432);
      for (const [i, j] of idx.entries()) batch.set(data.x.subarray(j * 432, (j + 1) * 432), i * 432);
      adam.zeroGrad();
      const out = net.forward({ data: batch, n: 32, c: 3, h: 12, w: 12 }, true);
      const { loss, grad } = softmaxCrossEntropy(
        out,
        idx.map((j) => data.labels[j]!),
      );
      net.backward(grad);
      adam.step(3e-3);
      if (step < 10) first += loss / 10;
      if (step >= 110) last += loss / 10;
    }
    expect(last).toBeLessThan(0.7 * first); // it did learn something

    // conv2's inputs: relu(conv1) of the float network (x) and of conv1 with round-to-nearest int8 weights (x̂).
    const w1 = conv1.weight.value;
    const p1 = weightParams(w1, [8, 3, 3, 3], 0, S8_PER_CHANNEL);
    const q1 = quantizeWeights(w1, [8, 3, 3, 3], 0, S8_PER_CHANNEL, p1.scales, p1.zeroPoints).data;
    const w1q = dequantize(q1, p1.scales, p1.zeroPoints, (i) => Math.floor(i / 27));
    const spec1: ConvLayerSpec = { op: 'Conv', inputShape: [3, 12, 12], pads: [1, 1, 1, 1] };
    const spec2: ConvLayerSpec = { op: 'Conv', inputShape: [8, 12, 12], pads: [1, 1, 1, 1] };
    const fresh = images(40, 5);
    const sample = (n: number): Float32Array => fresh.x.subarray(n * 432, (n + 1) * 432);
    const relu = (v: Float32Array): Float32Array => v.map((x) => Math.max(0, x));
    const floatIn = Array.from({ length: 40 }, (_, n) => relu(referenceConv(sample(n), w1, [8, 3, 3, 3], conv1.bias!.value, spec1)));
    const quantIn = Array.from({ length: 40 }, (_, n) => relu(referenceConv(sample(n), w1q, [8, 3, 3, 3], conv1.bias!.value, spec1)));
    const w2 = conv2.weight.value;
    const b2 = conv2.bias!.value;
    const { scales, zeroPoints } = layerWeightParams(w2, [16, 8, 3, 3], 0, S8_PER_CHANNEL);
    const result = await adaroundLayer({
      layer: spec2,
      weights: w2,
      weightDims: [16, 8, 3, 3],
      bias: b2,
      scheme: S8_PER_CHANNEL,
      scales,
      zeroPoints,
      inputs: quantIn.slice(0, 30),
      floatInputs: floatIn.slice(0, 30),
      activation: 'relu',
      options: { iterations: 600, batchSize: 64 },
    });
    const channelOf = (i: number): number => Math.floor(i / 72);
    expectFloorOrCeil(result.data, w2, scales, zeroPoints, S8_PER_CHANNEL, channelOf);
    expect(result.stats.keptNearest).toBe(false);
    const nearest = quantizeWeights(w2, [16, 8, 3, 3], 0, S8_PER_CHANNEL, scales, zeroPoints).data;
    // Held out: the float network's relu(conv2) vs the quantized network's, on the last 10 images.
    const ref = floatIn.slice(30).map((x) => relu(referenceConv(x, w2, [16, 8, 3, 3], b2, spec2)));
    const run = (q: Int8Array | Uint8Array): Float32Array[] =>
      quantIn.slice(30).map((x) => relu(referenceConv(x, dequantize(q, scales, zeroPoints, channelOf), [16, 8, 3, 3], b2, spec2)));
    const errNearest = mse(run(nearest), ref);
    const errAda = mse(run(result.data), ref);
    expect(errAda).toBeLessThan(0.95 * errNearest);
  });
});

describe('emitQdq with rounded weights', () => {
  // x[1,4,6,6] → Conv 3×3 (pad 1, bias) → Relu → y; channel 5's weights are so small that the
  // emitter raises its scale for the int32 bias, which layerWeightParams must reproduce.
  const spec: ConvLayerSpec = { op: 'Conv', inputShape: [4, 6, 6], pads: [1, 1, 1, 1] };
  const dims = [6, 4, 3, 3];
  const w = convWeights(6, 36, 51);
  for (let k = 0; k < 36; k++) w[5 * 36 + k] = w[5 * 36 + k]! * 1e-8;
  const bias = Float32Array.from([0.1, -0.2, 0.05, 0, 0.3, 1]);
  const inputs = featureMaps(4, 6, 6, 8, 52);
  const model = makeModel({
    graph: onnx.GraphProto.create({
      name: 'g',
      node: [
        makeNode('Conv', ['x', 'w', 'b'], ['c'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv'),
        makeNode('Relu', ['c'], ['y'], {}, 'relu'),
      ],
      initializer: [makeTensor('w', DataType.FLOAT, dims, w), makeTensor('b', DataType.FLOAT, [6], bias)],
      input: [makeValueInfo('x', DataType.FLOAT, [1, 4, 6, 6])],
      output: [makeValueInfo('y', DataType.FLOAT, [1, 6, 6, 6])],
    }),
    opset: 13,
  });
  const types = new Map(['x', 'c', 'y'].map((t) => [t, { type: 'float32', dims: [1, t === 'x' ? 4 : 6, 6, 6] }]));
  let xMax = 0;
  for (const x of inputs) for (const v of x) xMax = Math.max(xMax, v);
  const ranges = new Map([
    ['x', { min: 0, max: xMax }],
    ['y', { min: 0, max: 4 }],
  ]);
  const quantizedWeightsOf = (m: onnx.ModelProto): Int8Array => {
    const t = m.graph!.initializer!.find((i) => i.name === 'w_quantized')!;
    return new Int8Array(t.rawData!.buffer, t.rawData!.byteOffset, t.rawData!.byteLength);
  };
  const emit = (roundedWeights?: Map<string, { data: Int8Array; scales: Float32Array; zeroPoints: number[] }>) =>
    emitQdq(planQdq(model, types, { activationType: 'uint8' }), ranges, { activationType: 'uint8', roundedWeights });

  it('writes the given integers instead of round-to-nearest, and ORT runs the model', async () => {
    const inputScale = activationParams(ranges.get('x')!, 'uint8').scale;
    const { scales, zeroPoints } = layerWeightParams(w, dims, 0, S8_PER_CHANNEL, { bias, inputScale });
    expect(scales[5]).toBeGreaterThan(weightParams(w, dims, 0, S8_PER_CHANNEL).scales[5]!); // raised for the bias
    const result = await adaroundLayer({
      layer: spec,
      weights: w,
      weightDims: dims,
      bias,
      scheme: S8_PER_CHANNEL,
      scales,
      zeroPoints,
      inputs,
      activation: 'relu',
      options: { iterations: 300, batchSize: 32 },
    });
    expect(result.stats.changed).toBeGreaterThan(0);
    const plain = emit();
    const nearest = quantizedWeightsOf(plain.model);
    expect([...nearest]).toEqual([...quantizeWeights(w, dims, 0, S8_PER_CHANNEL, scales, zeroPoints).data]);
    const rounded = emit(new Map([['w', { data: result.data as Int8Array, scales, zeroPoints }]]));
    expect([...quantizedWeightsOf(rounded.model)]).toEqual([...result.data]);
    const run = async (m: onnx.ModelProto): Promise<Float32Array> => {
      const session = await ort.InferenceSession.create(encodeModel(m), { logSeverityLevel: 3 });
      const r = await session.run({ x: new ort.Tensor('float32', inputs[0]!, [1, 4, 6, 6]) });
      await session.release();
      return Float32Array.from(r.y!.data as Float32Array);
    };
    const a = await run(plain.model);
    const b = await run(rounded.model);
    expect(a.length).toBe(216);
    expect(a.some((v, i) => v !== b[i])).toBe(true);
  });

  it('refuses integers rounded with other scales, or that are not floor/ceil of w/s', () => {
    const unadjusted = weightParams(w, dims, 0, S8_PER_CHANNEL);
    const q = quantizeWeights(w, dims, 0, S8_PER_CHANNEL, unadjusted.scales, unadjusted.zeroPoints).data as Int8Array;
    expect(() => emit(new Map([['w', { data: q, scales: unadjusted.scales, zeroPoints: unadjusted.zeroPoints }]]))).toThrow(/other scales/);
    const inputScale = activationParams(ranges.get('x')!, 'uint8').scale;
    const { scales, zeroPoints } = layerWeightParams(w, dims, 0, S8_PER_CHANNEL, { bias, inputScale });
    const off = Int8Array.from(quantizeWeights(w, dims, 0, S8_PER_CHANNEL, scales, zeroPoints).data);
    off[7] = off[7]! + 2;
    expect(() => emit(new Map([['w', { data: off, scales, zeroPoints }]]))).toThrow(/value 7/);
  });
});
