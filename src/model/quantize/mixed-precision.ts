/**
 * Accuracy-driven mixed precision: keep the fewest activations float that bring the end-to-end
 * logits SQNR to a target.
 *
 * The unit is an activation (one Q/DQ pair), not a node: excluding a node alone leaves the Q/DQ on
 * its input (its quantized producer still writes 8 bits), so the error the node's consumers see
 * barely changes. An activation is kept float by excluding every node that touches it (its producer
 * and its quantized readers), which removes its Q/DQ pair; the nodes' other tensors stay quantized.
 *
 * Sensitivity is the end-to-end gain, measured once per activation on a switch probe: a copy of the
 * all-INT8 QDQ model in which every DequantizeLinear output is replaced by dq + s·(x − dq), s a scalar
 * graph input, so one ORT session measures every candidate (s = 1: that activation float). The probe
 * keeps the weights quantized and runs QDQ unfused; it ranks. The greedy steps are then measured on
 * the real model (re-planned with the exclusions, emitted, fused as the daemon runs it), since gains
 * do not add. Float only: ORT's CPU provider runs 16-bit QuantizeLinear/DequantizeLinear but has no
 * 16-bit QLinearConv/QGemm, so a 16-bit node unit runs as DQ → float op → Q, the float compute plus
 * two conversions.
 */
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { attrFloat, attrInt, DataType, makeNode, makeTensor, onnx, tensorToFloat32 } from '../onnx.js';
import { createSession, withExtraOutputs, type Range } from './calibrate.js';
import { collectGarbage, consumerMap, copyForEdit, initializerMap, NameAllocator, producerMap } from './graph.js';
import { SqnrAccumulator } from './numeric.js';
import type { HeldOutReport } from './held-out.js';
import type { TensorInfo } from './prepare.js';
import type { QdqPlan } from './qdq.js';

export interface MixedPrecisionOptions {
  /** end-to-end logits SQNR to reach, dB */
  targetSqnrDb: number;
  /** session options the latency is timed with (the daemon's); default: ORT CPU, 2 threads, all optimizations */
  sessionOptions?: ort.InferenceSession.SessionOptions;
  /** images the steps are measured on (default 16) */
  images?: number;
  /** images the per-activation sensitivity is measured on (default 4) */
  sensitivityImages?: number;
  /** most greedy steps tried (default 12) */
  maxSteps?: number;
  /**
   * least SQNR gain a step must bring to be kept (default 0.05 dB): on the built Inception V2 a step
   * gained 0.002 dB for two more float nodes
   */
  minGainDb?: number;
  /**
   * most latency a kept step may bring the model to, as a fraction of the FP32 model's (e.g. 0.4):
   * a step over it is undone like one that gains too little. Default: no bound.
   */
  maxLatencyRatio?: number;
  /** timed runs per model for the latency (median; default 21: a shared two-core machine made 9 vary by 1.7×) */
  timedRuns?: number;
}

export interface MixedPrecisionStep {
  /** activations kept float (cumulative), in the order they were added */
  activations: string[];
  /** nodes kept float for them (cumulative) */
  layers: string[];
  /** the activation this step tried */
  added?: string;
  /** the step raised the SQNR by at least minGainDb within the latency bound, so its activation stays in the combination */
  accepted: boolean;
  /** why a tried step was undone: it gained less than minGainDb, or its latency exceeds maxLatencyRatio */
  rejected?: 'gain' | 'latency';
  sqnrDb: number | null;
  top1Agreement: number;
  /** median latency / the all-INT8 model's, the two timed interleaved */
  latencyRatio: number;
  /** latencyRatio × the all-INT8 / FP32 ratio, those two timed interleaved at the start */
  latencyRatioToFloat: number;
  /** latencyRatio × the all-INT8 model's median at the start */
  latencyMs: number;
}

export interface MixedPrecisionReport {
  targetSqnrDb: number;
  /** the latency bound the steps were held to (fraction of FP32), when one was given */
  maxLatencyRatio?: number;
  reached: boolean;
  /** which images the figures come from: held-out (never calibrated on) or calibration */
  images: { source: 'held-out' | 'calibration'; count: number; sensitivity: number };
  /** every Q/DQ pair considered, and the ones with the largest probe gain */
  candidates: number;
  /** the candidates in the order tried (by gain; with a latency bound, by gain per multiply-add), with their compute */
  topCandidates: { activation: string; gainDb: number; megaMacs?: number }[];
  /** steps[0] is the all-INT8 model */
  steps: MixedPrecisionStep[];
  /**
   * the all-INT8 model's figure on all held-out images, set by the caller when the written model
   * keeps layers float and was measured there again (the report's heldOut is then the written model's)
   */
  allInt8HeldOut?: HeldOutReport;
  /**
   * When the target is not reached: the all-INT8 model with every activation's Q/DQ pair removed (its
   * INT8 weights, float activations), on the same images. No choice of activation precision goes past
   * it; a target above it needs weights kept float, i.e. float layers.
   */
  weightsOnly?: { sqnrDb: number | null; top1Agreement: number };
  /** nodes kept float in the written model (besides --exclude) */
  kept: string[];
  keptActivations: string[];
  float: { latencyMs: number };
  /** probe runs of the sensitivity pass and its time */
  sensitivity: { runs: number; durationMs: number };
  durationMs: number;
}

/** What one candidate model gives: end-to-end figures and latency. */
interface Measured {
  sqnrDb: number;
  top1Agreement: number;
  /** its latency / the all-INT8 model's, timed interleaved */
  latencyRatio: number;
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The default timing options when the caller gives none: what the daemon uses on a two-core CPU. */
export function defaultTimingOptions(): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: 2,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    enableCpuMemArena: true,
    enableMemPattern: true,
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

/**
 * Q/DQ pairs that share one scale and zero point, by the tensor that owns them: a MaxPool's output
 * (and a Concat's input) is requantized on its root's grid, so keeping only one of them float moves
 * the rounding downstream and gains nothing (measured: exactly 0 dB on the tiny CNN's Relu → MaxPool).
 */
export function parameterGroups(tensors: { tensor: string; sharedWith?: string }[]): Map<string, string[]> {
  // A nested Concat's output (InceptionV3's mixed9_0 inside mixed9) can be listed twice: when one of its
  // inputs cannot take the outer Concat's parameters (a Clip's clamp they would lose), its own entry
  // holds that input's, while its own Q/DQ pair uses the outer Concat's (the entry with sharedWith). It
  // is a member of the outer group only: two switches on one pair broke the probe.
  const sharedElsewhere = new Set(tensors.filter((t) => t.sharedWith !== undefined).map((t) => t.tensor));
  const groups = new Map<string, string[]>();
  for (const t of tensors) {
    const root = t.sharedWith ?? t.tensor;
    const list = groups.get(root) ?? [];
    if (t.sharedWith !== undefined || !sharedElsewhere.has(t.tensor)) list.push(t.tensor);
    groups.set(root, list);
  }
  return groups;
}

/**
 * What keeping a group float does to weights: the nodes it runs float (by name, as in the QDQ model)
 * and their float weights (same layout as the quantized ones; none for a node whose quantized weights
 * are not a plain rounding of them, e.g. a Gemm with alpha folded in).
 */
export interface WeightSwitches {
  floatedBy: (root: string) => string[];
  floatWeight: (node: string) => onnx.ITensorProto | undefined;
}

/** The float values a weight DequantizeLinear of an initializer produces (per-tensor or per-axis). */
function dequantizedWeight(dq: onnx.INodeProto, inits: Map<string, onnx.ITensorProto>): Float32Array | undefined {
  const q = inits.get(dq.input![0]!);
  const scaleT = inits.get(dq.input![1]!);
  if (!q?.rawData || !scaleT) return undefined;
  const raw = q.rawData;
  const ints =
    q.dataType === DataType.INT8
      ? new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength)
      : q.dataType === DataType.UINT8
        ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)
        : undefined;
  if (!ints) return undefined;
  const scales = tensorToFloat32(scaleT);
  const zpT = dq.input?.[2] ? inits.get(dq.input[2]) : undefined;
  const zpRaw = zpT?.rawData;
  const zps = !zpRaw
    ? new Int8Array(scales.length)
    : zpT.dataType === DataType.INT8
      ? new Int8Array(zpRaw.buffer, zpRaw.byteOffset, zpRaw.byteLength)
      : new Uint8Array(zpRaw.buffer, zpRaw.byteOffset, zpRaw.byteLength);
  const dims = (q.dims ?? []).map(Number);
  const axis = scales.length === 1 ? 0 : attrInt(dq, 'axis', 1);
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i++) {
    const c = scales.length === 1 ? 0 : Math.floor(i / inner) % scales.length;
    out[i] = (ints[i]! - (zps[c] ?? 0)) * scales[c]!;
  }
  return out;
}

/**
 * The all-INT8 model with a switch per parameter group: consumers of the DequantizeLinear output `dq`
 * of each member `x` read dq + s·(f(x) − dq) instead, `s` a scalar float graph input of the group and
 * f the clamp of a Relu/Clip folded into x's quantization (the producer writes the pre-activation).
 * Graph outputs written by a DQ are left alone (the compared logits are never a switch). With
 * `weights`, a node the group runs float also reads dq(W) + s·(W − dq(W)) as its weights: keeping a
 * node float removes its weights' rounding too, and on a trained network that is often most of the
 * gain (the photo head's classifier Gemm: +0.75 dB, nearly all of it weights).
 */
export function switchProbe(
  qdqModel: onnx.IModelProto,
  dequantized: Map<string, string>,
  groups: Map<string, string[]>,
  clamps: Map<string, number>,
  fetch: string,
  weights?: WeightSwitches,
): { model: onnx.ModelProto; switches: Map<string, string> } {
  const model = copyForEdit(qdqModel);
  const g = model.graph!;
  const names = new NameAllocator(g);
  const consumers = consumerMap(g);
  const switches = new Map<string, string>();
  // Each switch goes right after its DequantizeLinear, which follows its activation's producer.
  const after = new Map<string, onnx.INodeProto[]>();
  const inputs: onnx.IValueInfoProto[] = [];
  const constants: onnx.ITensorProto[] = [];
  const constant = (base: string, v: number): string => {
    const name = names.take(base);
    constants.push(makeTensor(name, DataType.FLOAT, [], Float32Array.of(v)));
    return name;
  };
  // Quantized Conv/Gemm weights a switch can restore: node name → the node, its weight DQ output and W − dq(W).
  const weightNodes = new Map<
    string,
    { node: onnx.INodeProto; dq: string; diff: { dims: onnx.ITensorProto['dims']; values: Float32Array } }
  >();
  const weightSwitched = new Map<string, string[]>();
  if (weights) {
    const inits = initializerMap(g);
    const producers = producerMap(g);
    for (const node of g.node ?? []) {
      if (node.opType !== 'Conv' && node.opType !== 'Gemm') continue;
      const name = node.name || node.output![0]!;
      const dq = producers.get(node.input?.[1] ?? '');
      const floatW = weights.floatWeight(name);
      if (dq?.opType !== 'DequantizeLinear' || !floatW) continue;
      const quantized = dequantizedWeight(dq, inits);
      const w = tensorToFloat32(floatW);
      if (!quantized || quantized.length !== w.length) continue;
      for (let i = 0; i < w.length; i++) quantized[i] = w[i]! - quantized[i]!;
      weightNodes.set(name, { node, dq: node.input![1]!, diff: { dims: floatW.dims, values: quantized } });
      weightSwitched.set(name, []);
    }
  }
  for (const [root, members] of groups) {
    const s = names.take(`${root}_float_switch`);
    let used = false;
    for (const x of members) {
      const dq = dequantized.get(x);
      if (dq === undefined || dq === x || after.has(dq)) continue; // a graph output, or already switched
      const readers = consumers.get(dq) ?? [];
      if (readers.length === 0) continue;
      used = true;
      const diff = names.take(`${x}_float_switch_diff`);
      const scaled = names.take(`${x}_float_switch_scaled`);
      const mixed = names.take(`${x}_float_switch_mixed`);
      for (const r of readers) r.input = r.input!.map((i) => (i === dq ? mixed : i));
      const nodes: onnx.INodeProto[] = [];
      let floatValue = x;
      const hi = clamps.get(x);
      if (hi !== undefined) {
        floatValue = names.take(`${x}_float_switch_clamped`);
        const bounds = [constant(`${x}_float_switch_min`, 0), ...(Number.isFinite(hi) ? [constant(`${x}_float_switch_max`, hi)] : [])];
        nodes.push(makeNode('Clip', [x, ...bounds], [floatValue], {}, names.take(`${s}_Clip`)));
      }
      nodes.push(
        makeNode('Sub', [floatValue, dq], [diff], {}, names.take(`${s}_Sub`)),
        makeNode('Mul', [s, diff], [scaled], {}, names.take(`${s}_Mul`)),
        makeNode('Add', [dq, scaled], [mixed], {}, names.take(`${s}_Add`)),
      );
      after.set(dq, nodes);
    }
    const floated = weights?.floatedBy(root).filter((n) => weightSwitched.has(n)) ?? [];
    if (!used && floated.length === 0) continue;
    for (const n of floated) weightSwitched.get(n)!.push(s);
    inputs.push(onnx.ValueInfoProto.create({ name: s, type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [] } } } }));
    switches.set(root, s);
  }
  // Weight switches go right before their node: dq(W) + (Σ switches that float it)·(W − dq(W)).
  const before = new Map<onnx.INodeProto, onnx.INodeProto[]>();
  for (const [name, groupSwitches] of weightSwitched) {
    if (groupSwitches.length === 0) continue;
    const { node, dq, diff } = weightNodes.get(name)!;
    const w = node.input![1]!;
    const diffName = names.take(`${w}_float_switch_diff`);
    constants.push(makeTensor(diffName, DataType.FLOAT, (diff.dims ?? []).map(Number), diff.values));
    const nodes: onnx.INodeProto[] = [];
    let on = groupSwitches[0]!;
    if (groupSwitches.length > 1) {
      on = names.take(`${name}_float_switch_sum`);
      nodes.push(makeNode('Sum', groupSwitches, [on], {}, names.take(`${name}_float_switch_Sum`)));
    }
    const scaled = names.take(`${w}_float_switch_scaled`);
    const mixed = names.take(`${w}_float_switch_mixed`);
    nodes.push(
      makeNode('Mul', [on, diffName], [scaled], {}, names.take(`${name}_float_switch_weight_Mul`)),
      makeNode('Add', [dq, scaled], [mixed], {}, names.take(`${name}_float_switch_weight_Add`)),
    );
    node.input = node.input!.map((i, k) => (k === 1 ? mixed : i));
    before.set(node, nodes);
  }
  const ordered: onnx.INodeProto[] = [];
  for (const n of g.node ?? []) {
    ordered.push(...(before.get(n) ?? []));
    ordered.push(n);
    for (const o of n.output ?? []) ordered.push(...(after.get(o) ?? []));
  }
  g.node = ordered;
  g.input = [...(g.input ?? []), ...inputs];
  g.initializer = [...(g.initializer ?? []), ...constants];
  return { model: withExtraOutputs(model, [fetch]), switches };
}

/**
 * The QDQ model with every activation's QuantizeLinear → DequantizeLinear pair removed: its weights stay
 * INT8, its activations float. A Relu/Clip folded into a quantization (`clamps`: tensor → upper bound)
 * stays as that clamp. Weight DequantizeLinear nodes read initializers, not a QuantizeLinear, and stay.
 */
export function withoutActivationRounding(qdqModel: onnx.IModelProto, clamps: Map<string, number>): onnx.ModelProto {
  const model = copyForEdit(qdqModel);
  const g = model.graph!;
  const names = new NameAllocator(g);
  const producers = producerMap(g);
  const constants: onnx.ITensorProto[] = [];
  const constant = (base: string, v: number): string => {
    const name = names.take(base);
    constants.push(makeTensor(name, DataType.FLOAT, [], Float32Array.of(v)));
    return name;
  };
  g.node = (g.node ?? []).map((dq) => {
    if (dq.opType !== 'DequantizeLinear') return dq;
    const q = producers.get(dq.input?.[0] ?? '');
    if (q?.opType !== 'QuantizeLinear') return dq;
    const x = q.input![0]!;
    const hi = clamps.get(x);
    // The DequantizeLinear's output keeps its name: its readers and a graph output need no renaming.
    // The QuantizeLinear then feeds nothing, and ORT drops it.
    const output = dq.output!;
    if (hi === undefined) return makeNode('Identity', [x], output, {}, dq.name ?? undefined);
    if (!Number.isFinite(hi)) return makeNode('Relu', [x], output, {}, dq.name ?? undefined);
    return makeNode(
      'Clip',
      [x, constant(`${x}_weights_only_min`, 0), constant(`${x}_weights_only_max`, hi)],
      output,
      {},
      dq.name ?? undefined,
    );
  });
  g.initializer = [...(g.initializer ?? []), ...constants];
  return model;
}

/**
 * The nodes (names, as planQdq's `exclude` takes them) that must run float for activation `x` to
 * lose its Q/DQ pair: its producer and every quantized node reading it, in the plan's model.
 */
export function nodesForFloatActivation(plan: QdqPlan, x: string): string[] {
  const g = plan.model.graph!;
  const nodes = new Set<onnx.INodeProto>();
  const p = producerMap(g).get(x);
  if (p && plan.quantized.has(p)) nodes.add(p);
  for (const c of consumerMap(g).get(x) ?? []) if (plan.quantized.has(c)) nodes.add(c);
  return [...nodes].map((n) => n.name || n.output![0]!);
}

/**
 * From the first plan: the float weights a group's float nodes get back (for the probe) and the
 * compute a group keeps float (multiply-adds of its Conv/Gemm nodes, output elements of the others).
 */
export function floatNodeFacts(
  plan: QdqPlan,
  types: Map<string, TensorInfo>,
  realize: (root: string) => string[],
): { weights: WeightSwitches; costOf: (root: string) => number } {
  const g = plan.model.graph!;
  const inits = initializerMap(g);
  const byName = new Map((g.node ?? []).map((n) => [n.name || n.output![0]!, n]));
  const elements = (t: string): number =>
    (types.get(t)?.dims ?? []).reduce<number>((a, d) => a * (typeof d === 'number' && d > 0 ? d : 1), 1);
  const floatWeight = (n: onnx.INodeProto | undefined): onnx.ITensorProto | undefined => {
    if (n?.opType !== 'Conv' && n?.opType !== 'Gemm') return undefined;
    // emitQdq folds a Gemm's alpha into its quantized weights: W alone is not what they round
    if (n.opType === 'Gemm' && attrFloat(n, 'alpha', 1) !== 1) return undefined;
    const w = inits.get(n.input?.[1] ?? '');
    return w?.dataType === DataType.FLOAT ? w : undefined;
  };
  const cost = (n: onnx.INodeProto): number => {
    const out = elements(n.output![0]!);
    const w = floatWeight(n);
    if (!w) return out;
    const dims = (w.dims ?? []).map(Number);
    const outChannels = n.opType === 'Gemm' && !attrInt(n, 'transB', 0) ? dims[1]! : dims[0]!;
    return out * (dims.reduce((a, b) => a * b, 1) / outChannels);
  };
  return {
    weights: { floatedBy: realize, floatWeight: (name) => floatWeight(byName.get(name)) },
    costOf: (root) => realize(root).reduce((sum, name) => sum + (byName.has(name) ? cost(byName.get(name)!) : 0), 0),
  };
}

/** Gives every unnamed node a unique name, so `exclude` can name it after Relu folding renamed its output. */
export function nameUnnamedNodes(model: onnx.IModelProto): void {
  const g = model.graph!;
  const names = new NameAllocator(g);
  for (const n of g.node ?? []) if (!n.name) n.name = names.take(`${n.opType ?? 'node'}_${n.output?.[0] ?? ''}`);
}

/** Ranges for a re-plan: tensors that shared a root's parameters (MaxPool outputs) may now need their own. */
export function rangesForReplan(ranges: Map<string, Range>, shared: Map<string, string>, fixed: Map<string, Range>): Map<string, Range> {
  const out = new Map(ranges);
  for (const [t, root] of shared) {
    const r = fixed.get(root) ?? ranges.get(root);
    if (r && !out.has(t)) out.set(t, r);
  }
  return out;
}

export interface MixedPrecisionContext {
  options: MixedPrecisionOptions;
  inputName: string;
  inputDims: number[];
  /** the inputs the figures are measured on, and where they come from */
  inputs: Float32Array[];
  source: 'held-out' | 'calibration';
  /** float logits for each input, in order */
  floatLogits: Float32Array[];
  /** FP32 model (its file or decoded model) for the float latency */
  floatModel: onnx.IModelProto | string;
  /** the all-INT8 QDQ model, its DQ map, parameter groups (root → members), folded clamps, compared tensor */
  int8: {
    model: onnx.IModelProto;
    dequantized: Map<string, string>;
    groups: Map<string, string[]>;
    clamps: Map<string, number>;
    logits: string;
  };
  /** the float logits name (the candidates' tensors are named after it) */
  logits: string;
  /** a parameter group's root → nodes to exclude so every member runs float */
  realize: (activation: string) => string[];
  /** float weights of the nodes a group runs float, so the probe measures their rounding too */
  weights?: WeightSwitches;
  /**
   * a group's compute kept float (multiply-adds of the nodes it runs float): with a latency bound the
   * candidates are tried by gain per cost, so cheap gains come before a bound is spent on one large layer
   */
  costOf?: (root: string) => number;
  /**
   * A model with these nodes (besides the user's exclusions) kept float, its compared tensor and the
   * nodes that did run float for them (`exclude` also matches a node by its output's name).
   */
  emit: (exclude: string[]) => { model: onnx.IModelProto; logits: string; excluded: string[] };
  log?: (msg: string, data: object) => void;
}

/**
 * Median time of a run of each session, the runs alternating (a, b, a, b, …) so that a slow spell of a
 * shared machine hits both alike: their ratio is what the search compares.
 */
async function timeInterleaved(
  a: ort.InferenceSession,
  b: ort.InferenceSession,
  feed: Record<string, ort.Tensor>,
  runs: number,
): Promise<{ a: number; b: number }> {
  await a.run(feed); // warm-up: allocation and prepacking
  await b.run(feed);
  const times = { a: [] as number[], b: [] as number[] };
  for (let i = 0; i < runs; i++) {
    for (const [session, list] of [
      [a, times.a],
      [b, times.b],
    ] as const) {
      const t0 = performance.now();
      await session.run(feed);
      list.push(performance.now() - t0);
    }
  }
  return { a: median(times.a), b: median(times.b) };
}

/** The all-INT8 model's session, kept open through the search: every candidate is timed against it. */
interface Int8Reference {
  session: ort.InferenceSession;
  /** its latency and the FP32 model's, timed interleaved at the start */
  ms: number;
  floatMs: number;
}

function timingFeed(ctx: MixedPrecisionContext): Record<string, ort.Tensor> {
  return { [ctx.inputName]: new ort.Tensor('float32', ctx.inputs[0]!, ctx.inputDims) };
}

async function endToEnd(
  ctx: MixedPrecisionContext,
  session: ort.InferenceSession,
  logits: string,
): Promise<Omit<Measured, 'latencyRatio'>> {
  const sqnr = new SqnrAccumulator();
  let agree = 0;
  for (let i = 0; i < ctx.inputs.length; i++) {
    const feed = { [ctx.inputName]: new ort.Tensor('float32', ctx.inputs[i]!, ctx.inputDims) };
    const out = (await session.run(feed, [logits]))[logits]!;
    const q = out.data as Float32Array;
    sqnr.add(ctx.floatLogits[i]!, q);
    if (argmax(q) === argmax(ctx.floatLogits[i]!)) agree++;
    out.dispose?.();
  }
  return { sqnrDb: sqnr.db, top1Agreement: agree / ctx.inputs.length };
}

/** Runs `use` on a session of `model` fetching `logits`, fused with the daemon's options, then releases it. */
async function withFusedSession<T>(
  ctx: MixedPrecisionContext,
  model: onnx.IModelProto,
  logits: string,
  use: (session: ort.InferenceSession) => Promise<T>,
): Promise<T> {
  const session = await createSession(withExtraOutputs(model, [logits]), ctx.options.sessionOptions ?? defaultTimingOptions());
  try {
    return await use(session);
  } finally {
    await session.release();
    collectGarbage();
  }
}

/**
 * End-to-end figures of a model (fused, the daemon's options) on the context's inputs, and its latency
 * against the all-INT8 model's, timed interleaved.
 */
function measureModel(ctx: MixedPrecisionContext, model: onnx.IModelProto, logits: string, int8: Int8Reference): Promise<Measured> {
  return withFusedSession(ctx, model, logits, async (session) => {
    const figures = await endToEnd(ctx, session, logits);
    const t = await timeInterleaved(session, int8.session, timingFeed(ctx), ctx.options.timedRuns ?? 21);
    return { ...figures, latencyRatio: t.a / t.b };
  });
}

/** Probe gain of each activation kept float alone, highest first. */
async function sensitivities(ctx: MixedPrecisionContext): Promise<{ gains: { activation: string; gainDb: number }[]; runs: number }> {
  const { model, switches } = switchProbe(
    ctx.int8.model,
    ctx.int8.dequantized,
    ctx.int8.groups,
    ctx.int8.clamps,
    ctx.int8.logits,
    ctx.weights,
  );
  const session = await createSession(model);
  collectGarbage();
  const count = Math.min(ctx.options.sensitivityImages ?? 4, ctx.inputs.length);
  const feeds = ctx.inputs.slice(0, count).map((x) => new ort.Tensor('float32', x, ctx.inputDims));
  const off = new ort.Tensor('float32', Float32Array.of(0), []);
  const on = new ort.Tensor('float32', Float32Array.of(1), []);
  let runs = 0;
  const sqnrWith = async (floatActivation: string | undefined): Promise<number> => {
    const acc = new SqnrAccumulator();
    for (let i = 0; i < count; i++) {
      const feed: Record<string, ort.Tensor> = { [ctx.inputName]: feeds[i]! };
      for (const [x, s] of switches) feed[s] = x === floatActivation ? on : off;
      const out = (await session.run(feed, [ctx.int8.logits]))[ctx.int8.logits]!;
      acc.add(ctx.floatLogits[i]!, out.data as Float32Array);
      out.dispose?.();
      runs++;
    }
    return acc.db;
  };
  try {
    const base = await sqnrWith(undefined);
    const gains: { activation: string; gainDb: number }[] = [];
    for (const x of switches.keys()) gains.push({ activation: x, gainDb: (await sqnrWith(x)) - base });
    gains.sort((a, b) => b.gainDb - a.gainDb);
    return { gains, runs };
  } finally {
    await session.release();
    collectGarbage();
  }
}

const finite = (db: number): number | null => (Number.isFinite(db) ? db : null);

/**
 * Measures the all-INT8 model; below the target, ranks the activations by probe gain and adds them
 * greedily (a step that does not raise the measured SQNR by minGainDb, or that takes the latency over
 * maxLatencyRatio × FP32's, is undone) until the target is reached, the
 * candidates with a positive gain run out, or maxSteps steps were tried. Returns the report and the
 * nodes to keep float in the model to write.
 */
export async function searchMixedPrecision(ctx: MixedPrecisionContext): Promise<MixedPrecisionReport> {
  const t0 = performance.now();
  const options = ctx.options.sessionOptions ?? defaultTimingOptions();
  const int8Session = await createSession(withExtraOutputs(ctx.int8.model, [ctx.int8.logits]), options);
  try {
    const floatSession = await createSession(ctx.floatModel, options);
    let reference: Int8Reference;
    try {
      const t = await timeInterleaved(int8Session, floatSession, timingFeed(ctx), ctx.options.timedRuns ?? 21);
      reference = { session: int8Session, ms: t.a, floatMs: t.b };
    } finally {
      await floatSession.release();
    }
    return await search(ctx, reference, t0);
  } finally {
    await int8Session.release();
  }
}

async function search(ctx: MixedPrecisionContext, reference: Int8Reference, t0: number): Promise<MixedPrecisionReport> {
  const target = ctx.options.targetSqnrDb;
  const maxSteps = ctx.options.maxSteps ?? 12;
  const maxLatencyRatio = ctx.options.maxLatencyRatio;
  const toFloat = reference.ms / reference.floatMs;
  const int8: Measured = { ...(await endToEnd(ctx, reference.session, ctx.int8.logits)), latencyRatio: 1 };
  const step = (
    m: Measured,
    activations: string[],
    layers: string[],
    rejected: MixedPrecisionStep['rejected'],
    added?: string,
  ): MixedPrecisionStep => ({
    activations,
    layers,
    ...(added !== undefined ? { added } : {}),
    accepted: rejected === undefined,
    ...(rejected ? { rejected } : {}),
    sqnrDb: finite(m.sqnrDb),
    top1Agreement: m.top1Agreement,
    latencyRatio: m.latencyRatio,
    latencyRatioToFloat: m.latencyRatio * toFloat,
    latencyMs: m.latencyRatio * reference.ms,
  });
  const steps = [step(int8, [], [], undefined)];
  ctx.log?.('mixed precision: all-INT8', steps[0]!);
  let best = int8;
  let kept: string[] = [];
  let keptLayers: string[] = [];
  let candidates = 0;
  let topCandidates: MixedPrecisionReport['topCandidates'] = [];
  let sensitivity = { runs: 0, durationMs: 0 };
  if (int8.sqnrDb < target) {
    const s0 = performance.now();
    const { gains, runs } = await sensitivities(ctx);
    sensitivity = { runs, durationMs: Math.round(performance.now() - s0) };
    candidates = gains.length;
    const costOf = ctx.costOf;
    if (maxLatencyRatio !== undefined && costOf) {
      // By gain per cost; a group of (nearly) no compute counts as a thousandth of the largest.
      const floor = 1e-3 * Math.max(1, ...gains.map((g) => costOf(g.activation)));
      const value = (g: { activation: string; gainDb: number }) => g.gainDb / Math.max(floor, costOf(g.activation));
      gains.sort((a, b) => value(b) - value(a));
    }
    topCandidates = gains.slice(0, 10).map((g) => ({
      activation: g.activation,
      gainDb: Math.round(g.gainDb * 100) / 100,
      ...(ctx.costOf ? { megaMacs: Math.round(ctx.costOf(g.activation) / 1e4) / 100 } : {}),
    }));
    ctx.log?.('mixed precision: sensitivities', { candidates, ...sensitivity, top: topCandidates.slice(0, 5) });
    for (const { activation } of gains.filter((g) => g.gainDb > 0)) {
      if (best.sqnrDb >= target || steps.length > maxSteps) break;
      const activations = [...kept, activation];
      const layers = [...new Set([...keptLayers, ...ctx.realize(activation)])];
      const emitted = ctx.emit(layers);
      const m = await measureModel(ctx, emitted.model, emitted.logits, reference);
      const rejected =
        m.sqnrDb < best.sqnrDb + (ctx.options.minGainDb ?? 0.05)
          ? 'gain'
          : maxLatencyRatio !== undefined && m.latencyRatio * toFloat > maxLatencyRatio
            ? 'latency'
            : undefined;
      steps.push(step(m, activations, emitted.excluded, rejected, activation));
      ctx.log?.('mixed precision: step', steps.at(-1)!);
      if (!rejected) {
        best = m;
        kept = activations;
        keptLayers = emitted.excluded;
      }
    }
  }
  let weightsOnly: MixedPrecisionReport['weightsOnly'];
  if (best.sqnrDb < target) {
    const stripped = withoutActivationRounding(ctx.int8.model, ctx.int8.clamps);
    const m = await withFusedSession(ctx, stripped, ctx.int8.logits, (session) => endToEnd(ctx, session, ctx.int8.logits));
    weightsOnly = { sqnrDb: finite(m.sqnrDb), top1Agreement: m.top1Agreement };
    ctx.log?.('mixed precision: INT8 weights, float activations', weightsOnly);
  }
  return {
    targetSqnrDb: target,
    ...(maxLatencyRatio !== undefined ? { maxLatencyRatio } : {}),
    reached: best.sqnrDb >= target,
    ...(weightsOnly ? { weightsOnly } : {}),
    images: { source: ctx.source, count: ctx.inputs.length, sensitivity: Math.min(ctx.options.sensitivityImages ?? 4, ctx.inputs.length) },
    candidates,
    topCandidates,
    steps,
    kept: keptLayers,
    keptActivations: kept,
    float: { latencyMs: reference.floatMs },
    sensitivity,
    durationMs: Math.round(performance.now() - t0),
  };
}
