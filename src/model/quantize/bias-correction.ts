/**
 * Sequential empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", the empirical
 * variant; see docs/ARCHITECTURE.md): layer by layer in topological order, the mean per output
 * channel of a Conv/Gemm in the partially quantized network — quantized layers upstream, already
 * corrected — is compared with the float network's on the same inputs, and the difference is added
 * to the layer's bias. Measured on the quantized network's own inputs: a correction computed from the
 * float inputs' means made results worse.
 *
 * Where a Relu (or Clip(0, max)) is folded into the layer, the mean is taken over the positions the
 * float network keeps (output > 0) only: those are all the next layer sees. Over every position the
 * mean error was dominated by the negative ones, and on a trained InceptionV3 the correction cost
 * 10 dB of logits SQNR instead of gaining 1.6 (README, Benchmarks).
 *
 * Cost: per generation (layers that do not feed each other, layer-io.ts), one pass of the probe model
 * and one of the float model over the inputs, each fetching only that generation's outputs.
 */
import * as ort from 'onnxruntime-node';
import { DataType, makeNode, makeTensor, type onnx, tensorToFloat32 } from '../onnx.js';
import { collectGarbage, initializerMap, NameAllocator, producerMap } from './graph.js';
import { createProbeSession, probeFeeds, type LayerIoContext, type LayerTensors } from './layer-io.js';

export interface BiasCorrectionResult {
  /** layers corrected */
  layers: number;
  /** passes of the probe model (one per generation) */
  passes: number;
  inputs: number;
  /** largest |correction| relative to the channel's float output RMS, for the report */
  maxRelativeShift: number;
  /** corrected int32 bias values clamped to the int32 range (0 expected) */
  saturated: number;
  durationMs: number;
}

/** Per channel of one layer: Σ(float − quantized) and the positions counted, Σ float², all positions. */
interface ChannelErrorSums {
  difference: Float64Array;
  counted: Float64Array;
  floatSquares: Float64Array;
  positions: number;
}

/**
 * Adds one output pair ([N, C, …] layout) to the sums: the difference over the positions where the float
 * output is > 0 when `activeOnly` (all positions otherwise), the float squares over all positions.
 */
export function addChannelErrors(float: ort.Tensor, quantized: ort.Tensor, activeOnly: boolean, sums: ChannelErrorSums): void {
  const f = float.data as Float32Array;
  const q = quantized.data as Float32Array;
  const channels = sums.difference.length;
  if (Number(float.dims[1] ?? 1) !== channels || q.length !== f.length) {
    throw new Error(`expected ${channels} channels and equal shapes, got [${float.dims.join(', ')}] and [${quantized.dims.join(', ')}]`);
  }
  const batch = Number(float.dims[0] ?? 1);
  const inner = f.length / (batch * channels);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < channels; c++) {
      const base = (b * channels + c) * inner;
      let difference = 0;
      let counted = 0;
      let squares = 0;
      for (let i = base; i < base + inner; i++) {
        const v = f[i]!;
        squares += v * v;
        if (activeOnly && v <= 0) continue;
        difference += v - q[i]!;
        counted++;
      }
      sums.difference[c]! += difference;
      sums.counted[c]! += counted;
      sums.floatSquares[c]! += squares;
    }
  }
  sums.positions += batch * inner;
}

/**
 * Measures the corrections (the plan is not changed): generation by generation, the probe model's and
 * the float model's outputs of that generation's layers, with the corrections found so far applied
 * upstream.
 */
export async function measureBiasCorrections(opts: {
  qdqModel: onnx.IModelProto;
  layers: LayerTensors[];
  /** a session of the float model exposing every layer's floatOutput */
  floatSession: Pick<ort.InferenceSession, 'run'>;
  inputs: Float32Array[];
  inputName: string;
  inputDims: number[];
  onGeneration?: (generation: number, of: number) => void;
}): Promise<{ corrections: Map<LayerTensors, Float32Array>; result: Omit<BiasCorrectionResult, 'durationMs' | 'saturated'> }> {
  const { layers, inputs, inputName, inputDims } = opts;
  const probe = await createProbeSession(opts.qdqModel, layers);
  const corrections = new Map<LayerTensors, Float32Array>();
  const generations = Math.max(0, ...layers.map((l) => l.generation));
  let maxRelativeShift = 0;
  try {
    const ctx: LayerIoContext = { probe, float: opts.floatSession, layers, corrections, inputName, inputDims };
    for (let g = 1; g <= generations; g++) {
      const these = layers.filter((l) => l.generation === g);
      const sums = new Map<LayerTensors, ChannelErrorSums>(
        these.map((l) => [
          l,
          {
            difference: new Float64Array(l.channels),
            counted: new Float64Array(l.channels),
            floatSquares: new Float64Array(l.channels),
            positions: 0,
          },
        ]),
      );
      for (const input of inputs) {
        const quantized = await probe.run(
          probeFeeds(ctx, input),
          these.map((l) => l.quantOutput),
        );
        const float = await opts.floatSession.run(
          { [inputName]: new ort.Tensor('float32', input, inputDims) },
          these.map((l) => l.floatOutput),
        );
        for (const l of these) addChannelErrors(float[l.floatOutput]!, quantized[l.quantOutput]!, l.foldedActivation, sums.get(l)!);
        for (const v of [...Object.values(quantized), ...Object.values(float)]) (v as ort.Tensor).dispose?.();
        collectGarbage();
      }
      for (const l of these) {
        const s = sums.get(l)!;
        const c = new Float32Array(l.channels);
        for (let ch = 0; ch < l.channels; ch++) {
          // A channel the float network never activates on these inputs keeps its bias.
          c[ch] = s.counted[ch]! > 0 ? s.difference[ch]! / s.counted[ch]! : 0;
          const rms = Math.sqrt(s.floatSquares[ch]! / s.positions);
          if (rms > 0) maxRelativeShift = Math.max(maxRelativeShift, Math.abs(c[ch]!) / rms);
        }
        corrections.set(l, c);
      }
      opts.onGeneration?.(g, generations);
    }
  } finally {
    await probe.release();
  }
  return { corrections, result: { layers: layers.length, passes: generations, inputs: inputs.length, maxRelativeShift } };
}

const INT32_MAX = 2147483647;
const INT32_MIN = -2147483648;

function int32Values(t: onnx.ITensorProto): Int32Array {
  const raw = t.rawData;
  if (!(raw instanceof Uint8Array) || raw.byteLength === 0) return Int32Array.from(t.int32Data ?? []);
  const copy = new Uint8Array(raw.byteLength);
  copy.set(raw);
  return new Int32Array(copy.buffer);
}

/**
 * Writes the corrections into the QDQ model's int32 biases (bias + correction / bias scale, rounded,
 * saturated), so the float weights need not be held again to emit a second time. A layer without a
 * bias gets one, with the scale s_in × s_w its kernel expects (numeric.ts quantizeBias). Returns how
 * many bias values saturated. The model is changed in place (it was emitted for this).
 */
export function writeBiasCorrections(model: onnx.IModelProto, corrections: Map<LayerTensors, Float32Array>): { saturated: number } {
  const g = model.graph!;
  const inits = initializerMap(g);
  const producers = producerMap(g);
  const names = new NameAllocator(g);
  const replaced = new Map<string, onnx.ITensorProto>();
  const added: onnx.ITensorProto[] = [];
  const addedNodes: onnx.NodeProto[] = [];
  let saturated = 0;
  const round = (x: number): number => {
    const q = Math.round(x);
    if (q > INT32_MAX || q < INT32_MIN) saturated++;
    return Math.min(INT32_MAX, Math.max(INT32_MIN, q));
  };
  for (const [l, c] of corrections) {
    const node = producers.get(l.quantOutput)!;
    if (l.quantBias) {
      const dq = producers.get(l.quantBias)!;
      const q = inits.get(dq.input![0]!)!;
      const scales = tensorToFloat32(inits.get(dq.input![1]!)!);
      const values = int32Values(q);
      for (let ch = 0; ch < values.length; ch++) values[ch] = round(values[ch]! + c[ch]! / scales[scales.length === 1 ? 0 : ch]!);
      replaced.set(q.name!, makeTensor(q.name!, DataType.INT32, (q.dims ?? []).map(Number), values));
      continue;
    }
    const inputScale = tensorToFloat32(inits.get(producers.get(l.quantInput)!.input![1]!)!)[0]!;
    const weightDq = producers.get(node.input![1]!)!;
    const weightScales = tensorToFloat32(inits.get(weightDq.input![1]!)!);
    const perChannel = weightScales.length > 1;
    const scales = weightScales.map((s) => Math.fround(inputScale * s));
    const values = Int32Array.from(c, (v, ch) => round(v / scales[perChannel ? ch : 0]!));
    const base = `${l.node}_corrected_bias`;
    const q = makeTensor(names.take(`${base}_quantized`), DataType.INT32, [l.channels], values);
    const dims = perChannel ? [scales.length] : [];
    const sc = makeTensor(names.take(`${base}_scale`), DataType.FLOAT, dims, scales);
    const zp = makeTensor(names.take(`${base}_zero_point`), DataType.INT32, dims, new Int32Array(scales.length));
    const out = names.take(`${base}_DequantizeLinear_Output`);
    added.push(q, sc, zp);
    addedNodes.push(
      makeNode(
        'DequantizeLinear',
        [q.name!, sc.name!, zp.name!],
        [out],
        perChannel ? { axis: 0 } : {},
        names.take(`${base}_DequantizeLinear`),
      ),
    );
    node.input = [...node.input!.slice(0, 2), out];
  }
  g.initializer = [...(g.initializer ?? []).map((t) => replaced.get(t.name ?? '') ?? t), ...added];
  // Constant DequantizeLinear nodes lead the graph, as emitQdq writes them.
  g.node = [...addedNodes, ...(g.node ?? [])];
  return { saturated };
}
