/**
 * Sequential empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", the empirical
 * variant; see docs/ARCHITECTURE.md): layer by layer in topological order, the mean per output
 * channel of a Conv/Gemm in the partially quantized network — quantized layers upstream, already
 * corrected — is compared with the float network's on the same inputs, and the difference is added
 * to the layer's bias. Measured on the quantized network's own inputs: a correction computed from the
 * float inputs' means made results worse.
 *
 * Cost: one float pass over the inputs for every layer's float means (fetched in groups of bounded
 * size), then one pass of the probe model per generation (layers that do not feed each other share a
 * pass, layer-io.ts), each fetching only that generation's outputs.
 */
import * as ort from 'onnxruntime-node';
import { DataType, makeNode, makeTensor, type onnx, tensorToFloat32 } from '../onnx.js';
import { collectGarbage, initializerMap, NameAllocator, producerMap } from './graph.js';
import { addChannelSums, createProbeSession, forEachQuantized, type LayerIoContext, type LayerTensors } from './layer-io.js';

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

/** Float per-channel means of every layer's output, one pass, fetches grouped as `groups` says. */
async function floatMeans(
  float: Pick<ort.InferenceSession, 'run'>,
  layers: LayerTensors[],
  groups: LayerTensors[][],
  inputs: Float32Array[],
  inputName: string,
  inputDims: number[],
): Promise<{ means: Map<LayerTensors, Float64Array>; rms: Map<LayerTensors, Float64Array> }> {
  const sums = new Map(layers.map((l) => [l, new Float64Array(l.channels)]));
  const squares = new Map(layers.map((l) => [l, new Float64Array(l.channels)]));
  const counts = new Map(layers.map((l) => [l, 0]));
  for (const input of inputs) {
    const feed = { [inputName]: new ort.Tensor('float32', input, inputDims) };
    for (const group of groups) {
      let out: ort.InferenceSession.OnnxValueMapType | undefined = await float.run(
        feed,
        group.map((l) => l.floatOutput),
      );
      for (const l of group) {
        const t = out[l.floatOutput]!;
        counts.set(l, counts.get(l)! + addChannelSums(t, sums.get(l)!, squares.get(l)!));
      }
      for (const v of Object.values(out)) (v as ort.Tensor).dispose?.();
      out = undefined;
      collectGarbage();
    }
  }
  const means = new Map<LayerTensors, Float64Array>();
  const rms = new Map<LayerTensors, Float64Array>();
  for (const l of layers) {
    const n = counts.get(l)!;
    means.set(
      l,
      sums.get(l)!.map((s) => s / n),
    );
    rms.set(
      l,
      squares.get(l)!.map((s) => Math.sqrt(s / n)),
    );
  }
  return { means, rms };
}

/**
 * Measures the corrections (the plan is not changed): float means once, then generation by
 * generation the probe model's means with the corrections found so far applied upstream.
 */
export async function measureBiasCorrections(opts: {
  qdqModel: onnx.IModelProto;
  layers: LayerTensors[];
  /** a session of the float model exposing every layer's floatOutput */
  floatSession: Pick<ort.InferenceSession, 'run'>;
  inputs: Float32Array[];
  inputName: string;
  inputDims: number[];
  /** float fetch groups (bounded bytes per run) */
  groupLayers: (layers: LayerTensors[]) => LayerTensors[][];
  onGeneration?: (generation: number, of: number) => void;
}): Promise<{ corrections: Map<LayerTensors, Float32Array>; result: Omit<BiasCorrectionResult, 'durationMs' | 'saturated'> }> {
  const { layers, inputs, inputName, inputDims } = opts;
  const { means, rms } = await floatMeans(opts.floatSession, layers, opts.groupLayers(layers), inputs, inputName, inputDims);
  const probe = await createProbeSession(opts.qdqModel, layers);
  const corrections = new Map<LayerTensors, Float32Array>();
  const generations = Math.max(0, ...layers.map((l) => l.generation));
  let maxRelativeShift = 0;
  try {
    const ctx: LayerIoContext = { probe, float: opts.floatSession, layers, corrections, inputName, inputDims };
    for (let g = 1; g <= generations; g++) {
      const these = layers.filter((l) => l.generation === g);
      const sums = new Map(these.map((l) => [l, new Float64Array(l.channels)]));
      const counts = new Map(these.map((l) => [l, 0]));
      await forEachQuantized(ctx, these, inputs, ['quantOutput'], (l, t) => {
        counts.set(l, counts.get(l)! + addChannelSums(t.quantOutput!, sums.get(l)!));
      });
      for (const l of these) {
        const n = counts.get(l)!;
        const floatMean = means.get(l)!;
        const scale = rms.get(l)!;
        const c = new Float32Array(l.channels);
        for (let ch = 0; ch < l.channels; ch++) {
          c[ch] = floatMean[ch]! - sums.get(l)![ch]! / n;
          if (scale[ch]! > 0) maxRelativeShift = Math.max(maxRelativeShift, Math.abs(c[ch]!) / scale[ch]!);
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
