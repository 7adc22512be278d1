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
import { attrFloat, DataType, makeTensor, type onnx, tensorToFloat32 } from '../onnx.js';
import { collectGarbage, initializerMap, NameAllocator } from './graph.js';
import { addChannelSums, createProbeSession, forEachQuantized, type LayerIoContext, type LayerTensors } from './layer-io.js';
import type { QdqPlan } from './qdq.js';

export interface BiasCorrectionResult {
  /** layers corrected */
  layers: number;
  /** passes of the probe model (one per generation) */
  passes: number;
  inputs: number;
  /** largest |correction| relative to the channel's float output RMS, for the report */
  maxRelativeShift: number;
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
        counts.set(l, counts.get(l)! + addChannelSums(t, sums.get(l)!));
        const sq = new ort.Tensor(
          'float32',
          (t.data as Float32Array).map((v) => v * v),
          t.dims,
        );
        addChannelSums(sq, squares.get(l)!);
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
}): Promise<{ corrections: Map<LayerTensors, Float32Array>; result: Omit<BiasCorrectionResult, 'durationMs'> }> {
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

/**
 * Writes the corrections into the plan's float biases (a layer without one gets one), so emitting
 * again quantizes the corrected bias to int32 as usual. The plan's initializers are shared with the
 * prepared model: replaced, never changed in place.
 */
export function applyBiasCorrections(plan: QdqPlan, corrections: Map<LayerTensors, Float32Array>): void {
  const g = plan.model.graph!;
  const inits = initializerMap(g);
  const names = new NameAllocator(g);
  const nodes = g.node ?? [];
  const replaced = new Map<string, onnx.ITensorProto>();
  const added: onnx.ITensorProto[] = [];
  for (const [l, c] of corrections) {
    const n = nodes[l.planIndex]!;
    // Gemm adds beta × C: the correction, in output units, goes in divided by beta.
    const beta = l.opType === 'Gemm' ? attrFloat(n, 'beta', 1) : 1;
    const biasName = n.input?.[2];
    if (biasName) {
      const old = inits.get(biasName)!;
      const values = Float32Array.from(tensorToFloat32(old));
      for (let i = 0; i < values.length; i++) values[i] = values[i]! + c[i]! / beta;
      replaced.set(biasName, makeTensor(biasName, DataType.FLOAT, (old.dims ?? []).map(Number), values));
    } else {
      const name = names.take(`${l.node}_corrected_bias`);
      added.push(
        makeTensor(
          name,
          DataType.FLOAT,
          [l.channels],
          c.map((v) => v / beta),
        ),
      );
      n.input = [...n.input!.slice(0, 2), name];
    }
  }
  g.initializer = [...(g.initializer ?? []).map((t) => replaced.get(t.name ?? '') ?? t), ...added];
}
