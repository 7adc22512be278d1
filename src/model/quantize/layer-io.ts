/**
 * What a quantized layer sees in the partially quantized network and what it should produce: the
 * inputs of a Conv/Gemm in the QDQ model (every layer upstream quantized, Q/DQ on their activations)
 * and the same layer's output in the float model, on the same network inputs. Sequential bias
 * correction (bias-correction.ts) reads per-channel means of these; AdaRound reads them whole.
 *
 * The QDQ side is a "probe" copy of the QDQ model: every layer's bias gets a float correction added
 * through a graph input, so upstream corrections take effect without rebuilding the session, and the
 * layers' inputs and outputs are graph outputs so they can be fetched.
 */
import * as ort from 'onnxruntime-node';
import { attrInt, DataType, makeNode, makeValueInfo, type onnx } from '../onnx.js';
import { createSession, withExtraOutputs } from './calibrate.js';
import { collectGarbage, copyForEdit, initializerMap, NameAllocator, producerMap } from './graph.js';
import type { EmittedLayer, QdqPlan } from './qdq.js';

/** A quantized layer with the names of its tensors on both sides. */
export interface LayerTensors extends EmittedLayer {
  /** float (prepared) model: the layer's input */
  floatInput: string;
  /** float (prepared) model: the layer's output before a folded Relu/Clip */
  floatOutput: string;
  /** output channels (the bias length) */
  channels: number;
  /** a Relu or Clip(0, max) folded into the layer's output quantization: only floatOutput > 0 reaches the next layer */
  foldedActivation: boolean;
  /**
   * 1 + the largest generation among the layers upstream of this one (1: no quantized layer
   * upstream). Layers of one generation never feed each other, so one pass serves them all.
   */
  generation: number;
  /** probe model: the graph input added to this layer's bias */
  correctionInput: string;
}

/** Names both sides of each emitted layer, its channel count and generation. */
export function describeLayers(plan: QdqPlan, emitted: EmittedLayer[]): LayerTensors[] {
  const nodes = plan.model.graph?.node ?? [];
  const inits = initializerMap(plan.model.graph!);
  // Output channels: the weight's [M, …] for Conv and Gemm with transB = 1, its [K, N] otherwise.
  const channelsOf = (n: onnx.INodeProto): number => {
    const dims = (inits.get(n.input![1]!)!.dims ?? []).map(Number);
    return n.opType === 'Gemm' && !attrInt(n, 'transB', 0) ? dims[1]! : dims[0]!;
  };
  const byIndex = new Map(emitted.map((l) => [l.planIndex, l]));
  // Generations in graph (topological) order: a tensor carries the deepest layer generation upstream of it.
  const depth = new Map<string, number>();
  const generation = new Map<number, number>();
  nodes.forEach((n, i) => {
    const upstream = Math.max(0, ...(n.input ?? []).map((t) => depth.get(t) ?? 0));
    const own = byIndex.has(i) ? upstream + 1 : upstream;
    if (byIndex.has(i)) generation.set(i, own);
    for (const o of n.output ?? []) depth.set(o, own);
  });
  return emitted.map((l, k) => {
    const n = nodes[l.planIndex]!;
    const out = n.output![0]!;
    return {
      ...l,
      floatInput: n.input![0]!,
      floatOutput: plan.preActivation.get(out) ?? out,
      channels: channelsOf(n),
      foldedActivation: plan.preActivation.has(out),
      generation: generation.get(l.planIndex)!,
      correctionInput: `bias_correction_${k}`,
    };
  });
}

/**
 * The probe copy of a QDQ model: `correctionInput` of each layer added to its bias (a new bias when it
 * had none), and every layer's quantInput and quantOutput exposed as graph outputs.
 */
export function probeModel(qdqModel: onnx.IModelProto, layers: LayerTensors[]): onnx.ModelProto {
  const model = copyForEdit(qdqModel);
  const g = model.graph!;
  const names = new NameAllocator(g);
  const producers = producerMap(g);
  const added: onnx.NodeProto[] = [];
  for (const l of layers) {
    const node = producers.get(l.quantOutput);
    if (!node) throw new Error(`internal: layer ${l.node} output ${l.quantOutput} has no producer`);
    g.input!.push(makeValueInfo(l.correctionInput, DataType.FLOAT, [l.channels]));
    if (l.quantBias) {
      const sum = names.take(`${l.quantBias}_corrected`);
      added.push(makeNode('Add', [l.quantBias, l.correctionInput], [sum], {}, names.take(`${l.node}_bias_correction`)));
      node.input![2] = sum;
    } else {
      node.input = [...node.input!.slice(0, 2), l.correctionInput];
    }
  }
  // The Adds go first: their inputs are initializers' DequantizeLinear outputs, which come first too.
  const weightDqs = (g.node ?? []).filter((n) => n.opType === 'DequantizeLinear' && !producers.has(n.input![0]!));
  const rest = (g.node ?? []).filter((n) => !weightDqs.includes(n));
  g.node = [...weightDqs, ...added, ...rest];
  return withExtraOutputs(
    model,
    layers.flatMap((l) => [l.quantInput, l.quantOutput]),
  );
}

/** The probe session and the float session, with what they need to run. */
export interface LayerIoContext {
  /** a session of probeModel(...) */
  probe: Pick<ort.InferenceSession, 'run'>;
  /** a session of the float model exposing every layer's floatOutput */
  float: Pick<ort.InferenceSession, 'run'>;
  layers: LayerTensors[];
  /** current bias corrections per layer (zeros when absent) */
  corrections: Map<LayerTensors, Float32Array>;
  inputName: string;
  inputDims: number[];
}

export async function createProbeSession(qdqModel: onnx.IModelProto, layers: LayerTensors[]): Promise<ort.InferenceSession> {
  return createSession(probeModel(qdqModel, layers));
}

export function probeFeeds(ctx: LayerIoContext, input: Float32Array): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = { [ctx.inputName]: new ort.Tensor('float32', input, ctx.inputDims) };
  for (const l of ctx.layers) {
    feeds[l.correctionInput] = new ort.Tensor('float32', ctx.corrections.get(l) ?? new Float32Array(l.channels), [l.channels]);
  }
  return feeds;
}

/**
 * For each network input, the layers' tensors in the partially quantized network (`quantInput`
 * and/or `quantOutput`, with the current corrections applied upstream) handed to `visit`, one input
 * at a time (nothing is kept here).
 */
export async function forEachQuantized(
  ctx: LayerIoContext,
  layers: LayerTensors[],
  inputs: Iterable<Float32Array>,
  which: ('quantInput' | 'quantOutput')[],
  visit: (layer: LayerTensors, tensors: Partial<Record<'quantInput' | 'quantOutput', ort.Tensor>>, inputIndex: number) => void,
): Promise<void> {
  const fetches = [...new Set(layers.flatMap((l) => which.map((w) => l[w])))];
  let k = 0;
  for (const input of inputs) {
    let out: ort.InferenceSession.OnnxValueMapType | undefined = await ctx.probe.run(probeFeeds(ctx, input), fetches);
    for (const l of layers) visit(l, Object.fromEntries(which.map((w) => [w, out![l[w]]!])), k);
    for (const v of Object.values(out)) (v as ort.Tensor).dispose?.();
    out = undefined;
    collectGarbage();
    k++;
  }
}

/**
 * Inputs to `layer` in the partially quantized network and the float network's output of the same
 * layer, per network input: what AdaRound fits the rounding of `layer`'s weights to. Holds them all
 * (one layer's worth); the caller picks how many network inputs to pass.
 */
export async function layerInputsAndFloatOutputs(
  ctx: LayerIoContext,
  layer: LayerTensors,
  inputs: Float32Array[],
): Promise<{ quantizedInputs: ort.Tensor[]; floatOutputs: ort.Tensor[] }> {
  const quantizedInputs: ort.Tensor[] = [];
  await forEachQuantized(ctx, [layer], inputs, ['quantInput'], (_l, t) => {
    // copied out of ORT's buffer, which is disposed after the visit
    quantizedInputs.push(new ort.Tensor('float32', Float32Array.from(t.quantInput!.data as Float32Array), t.quantInput!.dims));
  });
  const floatOutputs: ort.Tensor[] = [];
  for (const input of inputs) {
    const out = await ctx.float.run({ [ctx.inputName]: new ort.Tensor('float32', input, ctx.inputDims) }, [layer.floatOutput]);
    const t = out[layer.floatOutput]!;
    floatOutputs.push(new ort.Tensor('float32', Float32Array.from(t.data as Float32Array), t.dims));
    t.dispose?.();
  }
  return { quantizedInputs, floatOutputs };
}
