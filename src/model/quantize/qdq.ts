/**
 * QDQ emission, shaped so a provider recognises every quantized node as a node unit (and ORT's CPU
 * provider fuses it into an int8 kernel): every input of a quantized node comes from a
 * DequantizeLinear, its output feeds exactly one QuantizeLinear, activation scale/zero point are
 * scalar initializers, weights sit behind a DQ (per-channel or per-tensor, as the target wants),
 * biases int32 behind a DQ, and no quantized node writes a graph output (the output is renamed and a
 * DQ writes the original name).
 */
import { attrFloat, attrInt, DataType, getAttr, makeNode, makeTensor, onnx, tensorToFloat32 } from '../onnx.js';
import {
  collectGarbage,
  consumerMap,
  copyForEdit,
  graphInputNames,
  graphOutputNames,
  initializerMap,
  NameAllocator,
  producerMap,
  removeUnusedInitializers,
  type Node,
} from './graph.js';
import {
  activationParams,
  adjustWeightScalesForBias,
  asymmetricZeroPoint,
  quantizeBias,
  quantizeValue,
  quantizeWeights,
  quantRange,
  weightParams,
  type ActivationType,
  type QuantParams,
  type WeightScheme,
} from './numeric.js';
import type { Range } from './calibrate.js';
import { type RoundedWeights, useRoundedWeights } from './adaround.js';
import type { CountMap, TensorInfo } from './prepare.js';

/** Ops quantized with their own output range; ORT fuses each into a QLinear* kernel. */
const OWN_RANGE_OPS = new Set(['Conv', 'Gemm', 'Concat', 'Add', 'Mul', 'AveragePool', 'GlobalAveragePool']);
/** The range every quantized Softmax output gets, whatever the calibration saw (ORT does the same). */
const SOFTMAX_RANGE = { min: 0, max: 1 } as const;
/** Ops ORT runs directly on 8-bit data when their output Q reuses the input's scale/zero point. */
const DIRECT_OPS = new Set(['MaxPool', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze']);
/** Ops kept float on purpose, without a warning. */
const FLOAT_BY_DESIGN: Record<string, string> = {
  Softmax: 'Softmax kept float: 8-bit probabilities would have a resolution of 1/255',
  Relu: 'Relu kept float: its producer is not quantized or its input has other readers',
  Clip: 'Clip kept float: not a [0, max] clamp of a quantized producer read only by it',
};

export interface FloatNode {
  name: string;
  opType: string;
  reason: string;
}

export interface QdqPlan {
  /** The prepared model with foldable Relu/Clip(0,max) removed (their producers write their output). */
  model: onnx.ModelProto;
  quantized: Set<Node>;
  /** tensors that get their own calibrated range */
  own: Set<string>;
  /** tensor → tensor whose scale/zero point it reuses */
  shared: Map<string, string>;
  /**
   * Concat inputs that reuse the Concat output's parameters (QLinearConcat then copies bytes
   * instead of requantizing). Also calibrated: if the input is a folded Relu/Clip output and the
   * Concat range goes below 0 (or above the Clip max), the input keeps its own range so the
   * clamp is not lost.
   */
  concatShared: Set<string>;
  /** outputs of folded Relu/Clip nodes → the upper clamp (Infinity for Relu) their range must keep */
  reluFolded: Map<string, number>;
  /** outputs of folded Relu/Clip nodes → their input, the producer's pre-activation output in the prepared model */
  preActivation: Map<string, string>;
  /** tensors whose range is fixed rather than calibrated (quantized Softmax outputs) */
  fixedRanges: Map<string, Range>;
  floatNodes: FloatNode[];
  foldedRelus: number;
  warnings: string[];
}

function nodeLabel(n: Node): string {
  return n.name || n.output?.[0] || n.opType || '?';
}

function isDefaultDomain(n: Node): boolean {
  return !n.domain || n.domain === 'ai.onnx';
}

/**
 * Decides which nodes to quantize and which tensors need ranges. `types` gives element types
 * (from ORT) so integer tensors are never quantized.
 */
export function planQdq(
  prepared: onnx.IModelProto,
  types: Map<string, TensorInfo>,
  opts: {
    exclude?: string[];
    activationType: ActivationType;
    shareConcatParams?: boolean;
    /** DQ → Softmax → Q with the range [0, 1] instead of a float Softmax */
    quantizeSoftmax?: boolean;
    /** Relu/Clip(0, max) as DQ → op → Q node units instead of folded into their producer */
    keepActivations?: boolean;
  },
): QdqPlan {
  const model = copyForEdit(prepared); // nodes copied, weights shared (never edited here)
  const g = model.graph!;
  const inits = initializerMap(g);
  const exclude = new Set(opts.exclude ?? []);
  const floatNodes: FloatNode[] = [];
  const warnings: string[] = [];
  const quantized = new Set<Node>();
  const isFloat = (t: string): boolean => {
    const init = inits.get(t);
    if (init) return init.dataType === DataType.FLOAT;
    return types.get(t)?.type === 'float32';
  };
  const known = new Set<string>();
  for (const n of g.node ?? []) {
    const excluded = exclude.has(n.name ?? '') || exclude.has(n.output?.[0] ?? '');
    for (const e of [n.name ?? '', n.output?.[0] ?? '']) if (exclude.has(e)) known.add(e);
    const op = n.opType ?? '';
    if (excluded) {
      floatNodes.push({ name: nodeLabel(n), opType: op, reason: 'excluded by request' });
      continue;
    }
    if (!isDefaultDomain(n) || (!OWN_RANGE_OPS.has(op) && !DIRECT_OPS.has(op))) {
      if (op in FLOAT_BY_DESIGN && isDefaultDomain(n)) continue; // decided below / by design
      floatNodes.push({ name: nodeLabel(n), opType: op, reason: `no int8 kernel for ${op}: left float` });
      warnings.push(`${op} node "${nodeLabel(n)}" is not quantized (unsupported op); it runs in float`);
      continue;
    }
    const reason = unquantizableReason(n, inits, isFloat);
    if (reason) {
      floatNodes.push({ name: nodeLabel(n), opType: op, reason });
      warnings.push(`${op} node "${nodeLabel(n)}" left float: ${reason}`);
      continue;
    }
    if (OWN_RANGE_OPS.has(op)) quantized.add(n);
  }
  for (const e of exclude) if (!known.has(e)) warnings.push(`--exclude ${e}: no node has that name`);

  // Relu folding: the producer takes the Relu's output (range [0, max] → zero point at qmin, so
  // the clamp happens in the requantization). Legal only for asymmetric activations, a producer
  // we quantize, and a pre-Relu tensor nobody else reads.
  const consumers = consumerMap(g);
  const producers = producerMap(g);
  const outputs = graphOutputNames(g);
  const removed = new Set<Node>();
  const reluFolded = new Map<string, number>();
  const preActivation = new Map<string, string>();
  let foldedRelus = 0;
  // Clip(0, max) (ReLU6) folds the same way: the calibrated output range lies within [0, max].
  const isZeroConst = (name: string | undefined): boolean => {
    const t = name ? inits.get(name) : undefined;
    if (!t || t.dataType !== DataType.FLOAT) return false;
    const v = tensorToFloat32(t);
    return v.length === 1 && v[0] === 0;
  };
  const fixedRanges = new Map<string, Range>();
  for (const r of g.node ?? []) {
    const isRelu = r.opType === 'Relu';
    const isClip = r.opType === 'Clip';
    if ((!isRelu && !isClip) || !isDefaultDomain(r)) continue;
    if (exclude.has(r.name ?? '') || exclude.has(r.output?.[0] ?? '')) continue;
    if (opts.keepActivations) {
      // Kept as a node unit: its bounds must be constants (a provider reads them at compile time).
      const constBounds = (r.input ?? []).slice(1).every((b) => !b || inits.has(b));
      if (constBounds && !unquantizableReason(r, inits, isFloat)) quantized.add(r);
      else
        floatNodes.push({
          name: nodeLabel(r),
          opType: r.opType!,
          reason: `${r.opType} kept float: its bounds are not constants or it is not float`,
        });
      continue;
    }
    const clampAtZero = isRelu || (isZeroConst(r.input?.[1]) && (!r.input?.[2] || inits.has(r.input[2])));
    const x = r.input?.[0] ?? '';
    const p = producers.get(x);
    if (clampAtZero && p && quantized.has(p) && (consumers.get(x)?.length ?? 0) === 1 && !outputs.has(x) && (p.output?.length ?? 0) === 1) {
      p.output = [r.output![0]!];
      const hi = isClip && r.input?.[2] ? tensorToFloat32(inits.get(r.input[2])!)[0]! : Infinity;
      reluFolded.set(r.output![0]!, hi);
      preActivation.set(r.output![0]!, x);
      removed.add(r);
      foldedRelus++;
    } else {
      floatNodes.push({ name: nodeLabel(r), opType: r.opType!, reason: FLOAT_BY_DESIGN[r.opType!]! });
    }
  }
  g.node = (g.node ?? []).filter((n) => !removed.has(n));
  for (const n of g.node) {
    if (n.opType === 'Softmax' && isDefaultDomain(n) && !exclude.has(n.name ?? '') && !exclude.has(n.output?.[0] ?? '')) {
      if (opts.quantizeSoftmax && !unquantizableReason(n, inits, isFloat)) {
        quantized.add(n);
        fixedRanges.set(n.output![0]!, { ...SOFTMAX_RANGE });
      } else {
        floatNodes.push({ name: nodeLabel(n), opType: 'Softmax', reason: FLOAT_BY_DESIGN.Softmax! });
      }
    }
  }

  // Relu/Clip/Softmax, when quantized (keepActivations / quantizeSoftmax), are DQ → op → Q units:
  // their non-constant input and output get Q/DQ, constant inputs (Clip bounds) stay float.
  const own = new Set<string>();
  for (const n of g.node) {
    if (!quantized.has(n)) continue;
    const op = n.opType!;
    const ins = op === 'Conv' || op === 'Gemm' ? [n.input![0]!] : (n.input ?? []).filter((i) => i && !inits.has(i));
    for (const i of ins) own.add(i);
    own.add(n.output![0]!);
  }
  // Direct ops, in topological order so chains (MaxPool → Reshape) resolve to one root.
  const shared = new Map<string, string>();
  const root = (t: string): string => shared.get(t) ?? t;
  for (const n of g.node) {
    const op = n.opType ?? '';
    if (!DIRECT_OPS.has(op) || !isDefaultDomain(n)) continue;
    if (exclude.has(n.name ?? '') || exclude.has(n.output?.[0] ?? '')) continue;
    if (unquantizableReason(n, inits, isFloat)) continue;
    const x = n.input![0]!;
    if (!own.has(x) && !shared.has(x)) {
      floatNodes.push({ name: nodeLabel(n), opType: op, reason: 'input is not quantized, so it runs in float' });
      continue;
    }
    const out = n.output![0]!;
    own.delete(out);
    shared.set(out, root(x));
    quantized.add(n);
  }
  // A Gemm whose output only float nodes read (the classifier's logits before Softmax) keeps a
  // float output: ORT fuses DQ→Gemm without an output Q into a QGemm with float output, so the
  // logits skip one 8-bit rounding at no cost. Not for graph outputs (a fused node must not write one).
  const finalConsumers = consumerMap(g);
  const sharedRoots = new Set(shared.values());
  for (const n of g.node) {
    if (n.opType !== 'Gemm' || !quantized.has(n)) continue;
    const o = n.output![0]!;
    const readers = finalConsumers.get(o) ?? [];
    if (outputs.has(o) || sharedRoots.has(o) || readers.length === 0 || readers.some((r) => quantized.has(r))) continue;
    own.delete(o);
  }
  const concatShared = new Set<string>();
  if (opts.shareConcatParams !== false) {
    const prod = producerMap(g);
    for (const c of g.node) {
      if (c.opType !== 'Concat' || !quantized.has(c)) continue;
      for (const i of c.input ?? []) {
        const p = prod.get(i);
        if (!p || !quantized.has(p) || !OWN_RANGE_OPS.has(p.opType ?? '')) continue;
        if ((finalConsumers.get(i)?.length ?? 0) !== 1 || outputs.has(i) || sharedRoots.has(i) || !own.has(i)) continue;
        concatShared.add(i);
      }
    }
  }
  return { model, quantized, own, shared, concatShared, reluFolded, preActivation, fixedRanges, floatNodes, foldedRelus, warnings };
}

function unquantizableReason(n: Node, inits: Map<string, onnx.ITensorProto>, isFloat: (t: string) => boolean): string | undefined {
  const op = n.opType ?? '';
  const ins = (n.input ?? []).filter(Boolean);
  if (op === 'Conv' || op === 'Gemm') {
    const w = inits.get(n.input?.[1] ?? '');
    if (!w) return 'weight is not a constant initializer';
    if (w.dataType !== DataType.FLOAT) return 'weight is not float32';
    const b = n.input?.[2];
    if (b && (!inits.get(b) || inits.get(b)!.dataType !== DataType.FLOAT)) return 'bias is not a constant float initializer';
    if (op === 'Gemm') {
      if (attrInt(n, 'transA', 0) !== 0) return 'transA=1 is not supported';
      if ((w.dims ?? []).length !== 2) return 'weight is not 2-D';
      if (b) {
        const nOut = Number(w.dims![attrInt(n, 'transB', 0) ? 0 : 1]);
        const bt = inits.get(b)!;
        const size = (bt.dims ?? []).reduce((a: number, d) => a * Number(d), 1);
        if (size !== nOut) return 'bias is not one value per output column';
      }
    }
    if (!isFloat(n.input![0]!)) return 'input is not float32';
  } else {
    for (const i of op in { Reshape: 1, Squeeze: 1, Unsqueeze: 1 } ? ins.slice(0, 1) : ins) {
      if (!isFloat(i)) return `input ${i} is not float32`;
    }
  }
  for (const o of n.output ?? []) if (o && !isFloat(o)) return `output ${o} is not float32`;
  return undefined;
}

export interface TensorQuant {
  tensor: string;
  min: number;
  max: number;
  scale: number;
  zeroPoint: number;
  /** set when the tensor reuses another tensor's parameters (MaxPool, Reshape …) */
  sharedWith?: string;
}

export interface QdqResult {
  model: onnx.ModelProto;
  tensors: TensorQuant[];
  /** float tensor name → name of its dequantized copy in the QDQ model (for per-layer SQNR) */
  dequantized: Map<string, string>;
  /** weights whose channel scales were raised so the int32 bias fits */
  biasAdjusted: { node: string; channels: number[] }[];
  /** the quantized Conv/Gemm nodes, in graph order */
  layers: EmittedLayer[];
}

/** A quantized Conv or Gemm: where its tensors are in the QDQ model and in the plan's (float) model. */
export interface EmittedLayer {
  /** node name (or first output) */
  node: string;
  opType: 'Conv' | 'Gemm';
  /** index of the node in plan.model's graph */
  planIndex: number;
  /** QDQ model: the layer's input, a DequantizeLinear output */
  quantInput: string;
  /** QDQ model: the node's float output, before its QuantizeLinear (pre-activation when a Relu was folded) */
  quantOutput: string;
  /** QDQ model: the bias input (a DequantizeLinear output), if any */
  quantBias?: string;
}

const ZP_TYPES: Record<ActivationType, { dataType: number; array: (v: number) => Uint8Array | Int8Array | Uint16Array }> = {
  uint8: { dataType: DataType.UINT8, array: (v) => Uint8Array.of(v) },
  int8: { dataType: DataType.INT8, array: (v) => Int8Array.of(v) },
  uint16: { dataType: DataType.UINT16, array: (v) => Uint16Array.of(v) },
};

export interface EmitOptions {
  activationType: ActivationType;
  /** Conv weights (default: per-channel symmetric int8) */
  weights?: WeightScheme;
  /** Gemm weights (default: as Conv) */
  gemmWeights?: WeightScheme;
  /** ranges narrower than this are widened, activations and weights alike */
  minRealRange?: number;
  /**
   * Integer weights rounded elsewhere (AdaRound), by weight initializer name, used instead of
   * round-to-nearest; they must have been rounded with the scales computed here (checked), and for a
   * Gemm with alpha ≠ 1 from alpha·W (alpha is folded into the weights below).
   */
  roundedWeights?: ReadonlyMap<string, RoundedWeights>;
  /** Pools prepare.ts rewrote as a depthwise conv times a count map: their window sums' parameters follow the Mul's. */
  countMaps?: readonly CountMap[];
}

/** Bytes of temporary arrays emitQdq lets pile up between garbage collections. */
const GARBAGE_BUDGET_BYTES = 16 << 20;

const DEFAULT_WEIGHTS: WeightScheme = { type: 'int8', symmetric: true, perChannel: true };

const WEIGHT_DATA_TYPE: Record<WeightScheme['type'], number> = { int8: DataType.INT8, uint8: DataType.UINT8 };

/** Writes Q/DQ nodes and quantized initializers for a plan and calibrated ranges. */
export function emitQdq(plan: QdqPlan, ranges: Map<string, Range>, opts: EmitOptions): QdqResult {
  const { activationType, minRealRange } = opts;
  const convWeights = opts.weights ?? DEFAULT_WEIGHTS;
  const gemmWeights = opts.gemmWeights ?? convWeights;
  const model = copyForEdit(plan.model); // nodes copied, weights shared: new initializers replace them
  const g = model.graph!;
  const names = new NameAllocator(g);
  const inits = initializerMap(g);
  const outputs = graphOutputNames(g);
  const graphInputs = graphInputNames(g);
  const producers = producerMap(g);
  const consumers = consumerMap(g);
  const quantized = new Set<Node>();
  // plan.quantized refers to nodes of plan.model; match them by position (the copy keeps order).
  const planNodes = plan.model.graph!.node ?? [];
  (g.node ?? []).forEach((n, i) => {
    if (plan.quantized.has(planNodes[i]!)) quantized.add(n);
  });
  // 16-bit Q/DQ exist in the default domain only from opset 21.
  const qdqDomain = activationType === 'uint16' ? 'com.microsoft' : '';
  const zpType = ZP_TYPES[activationType];
  const { qmin, qmax } = quantRange(activationType);

  const params = new Map<string, { p: QuantParams; scaleName: string; zpName: string }>();
  const tensors: TensorQuant[] = [];
  const newInits: onnx.ITensorProto[] = [];
  /** Writes a tensor's scale and zero point initializers and records them (and its range, for the report). */
  const addParams = (t: string, p: QuantParams, r: Range): { p: QuantParams; scaleName: string; zpName: string } => {
    const scaleName = names.take(`${t}_scale`);
    const zpName = names.take(`${t}_zero_point`);
    newInits.push(makeTensor(scaleName, DataType.FLOAT, [], Float32Array.of(p.scale)));
    newInits.push(makeTensor(zpName, zpType.dataType, [], zpType.array(p.zeroPoint)));
    const entry = { p, scaleName, zpName };
    params.set(t, entry);
    tensors.push({ tensor: t, min: r.min, max: r.max, scale: p.scale, zeroPoint: p.zeroPoint });
    return entry;
  };
  const paramsFor = (t: string): { p: QuantParams; scaleName: string; zpName: string } => {
    const existing = params.get(t);
    if (existing) return existing;
    const r = plan.fixedRanges.get(t) ?? ranges.get(t);
    if (!r) throw new Error(`internal: no calibrated range for tensor ${t}`);
    return addParams(t, activationParams(r, activationType, false, minRealRange), r);
  };

  // Q/DQ pairs for activations, placed right after their producer (graph inputs: at the start).
  const after = new Map<Node | null, Node[]>();
  const dequantized = new Map<string, string>();
  const activations = [...plan.own, ...plan.shared.keys()];
  const concatOf = new Map<string, string>();
  for (const n of g.node ?? []) {
    if (n.opType !== 'Concat') continue;
    for (const i of n.input ?? []) if (plan.concatShared.has(i)) concatOf.set(i, n.output![0]!);
  }
  const rootOf = (t: string): string | undefined => {
    const c = concatOf.get(t);
    if (c === undefined) return plan.shared.get(t);
    // A folded Relu/Clip clamps through its range: [0, …] (zero point = qmin) and, for Clip,
    // no wider than its max. A Concat range that breaks either would lose the clamp.
    const clampMax = plan.reluFolded.get(t);
    const fits = (root: string): boolean => {
      const cr = ranges.get(root);
      return cr !== undefined && (clampMax === undefined || (cr.min >= 0 && cr.max <= clampMax));
    };
    if (!fits(c)) return undefined;
    // A Concat inside a Concat (InceptionV3's mixed9_0 in mixed9) uses the outer one's parameters, so
    // its inputs take those too: then neither Concat requantizes, both copy bytes.
    let root = c;
    for (let outer = concatOf.get(root); outer !== undefined && fits(outer); outer = concatOf.get(root)) root = outer;
    return root;
  };
  // A count map's window sums get the final parameters of its Mul's output (a Concat's, when shared)
  // with the scale ÷ the map's inside value and the same zero point: inside the image the QLinearMul
  // then multiplies integers by exactly 1, so the rewrite adds no rounding there (prepare.ts).
  const windowSums = new Map<string, { product: string; inside: number }>();
  for (const m of opts.countMaps ?? []) {
    const mul = (g.node ?? []).find((n) => n.name === m.mul);
    const product = mul?.output?.[0];
    if (mul && product && quantized.has(mul)) windowSums.set(m.windowSums, { product, inside: m.inside });
  }
  const windowSumParams = (t: string, w: { product: string; inside: number }) => {
    const base = paramsFor(rootOf(w.product) ?? w.product).p;
    const p = { scale: base.scale / w.inside, zeroPoint: base.zeroPoint };
    return addParams(t, p, { min: (qmin - p.zeroPoint) * p.scale, max: (qmax - p.zeroPoint) * p.scale });
  };
  for (const t of activations) {
    const rootName = rootOf(t);
    const sums = windowSums.get(t);
    const q = sums ? windowSumParams(t, sums) : rootName ? paramsFor(rootName) : paramsFor(t);
    params.set(t, q);
    if (rootName) {
      const r = plan.fixedRanges.get(rootName) ?? ranges.get(rootName)!;
      tensors.push({ tensor: t, min: r.min, max: r.max, scale: q.p.scale, zeroPoint: q.p.zeroPoint, sharedWith: rootName });
    }
    const producer = producers.get(t) ?? null;
    const isOutput = outputs.has(t);
    let qInput = t;
    if (isOutput && producer) {
      qInput = names.take(`${t}_QuantizeLinear_Input`);
      producer.output = producer.output!.map((o) => (o === t ? qInput : o));
    }
    const qOut = names.take(`${t}_QuantizeLinear_Output`);
    const dqOut = isOutput ? t : names.take(`${t}_DequantizeLinear_Output`);
    const qNode = makeNode(
      'QuantizeLinear',
      [qInput, q.scaleName, q.zpName],
      [qOut],
      {},
      names.take(`${t}_QuantizeLinear`),
      qdqDomain || undefined,
    );
    const dqNode = makeNode(
      'DequantizeLinear',
      [qOut, q.scaleName, q.zpName],
      [dqOut],
      {},
      names.take(`${t}_DequantizeLinear`),
      qdqDomain || undefined,
    );
    if (!isOutput) {
      for (const c of consumers.get(t) ?? []) c.input = c.input!.map((i) => (i === t ? dqOut : i));
    }
    const list = after.get(producer) ?? [];
    list.push(qNode, dqNode);
    after.set(producer, list);
    dequantized.set(t, dqOut);
    params.set(dqOut, q); // consumers now read dqOut; weights/bias look their input scale up by it
    if (!producer && !graphInputs.has(t)) throw new Error(`internal: tensor ${t} has no producer and is not a graph input`);
  }

  // Weights, biases and constant inputs of the quantized nodes.
  const biasAdjusted: { node: string; channels: number[] }[] = [];
  const weightDqs: Node[] = [];
  const dqInitializer = (
    base: string,
    tensor: onnx.ITensorProto,
    scale: onnx.ITensorProto,
    zp: onnx.ITensorProto,
    axis?: number,
  ): string => {
    newInits.push(tensor, scale, zp);
    const out = names.take(`${base}_DequantizeLinear_Output`);
    weightDqs.push(
      makeNode(
        'DequantizeLinear',
        [tensor.name!, scale.name!, zp.name!],
        [out],
        axis === undefined ? {} : { axis },
        names.take(`${base}_DequantizeLinear`),
      ),
    );
    return out;
  };
  // Each weight passes through float copies (read, scaled, quantized): collected every so often so
  // they do not pile up to V8's own threshold (a model's weights are tens of MB).
  let sinceCollect = 0;
  const layers: EmittedLayer[] = [];
  const nodeIndex = new Map((g.node ?? []).map((n, i) => [n, i]));
  for (const n of g.node ?? []) {
    if (!quantized.has(n)) continue;
    const op = n.opType!;
    if (op === 'Conv' || op === 'Gemm') {
      sinceCollect += (inits.get(n.input![1]!)?.rawData?.byteLength ?? 0) * 3;
      if (sinceCollect > GARBAGE_BUDGET_BYTES) {
        collectGarbage();
        sinceCollect = 0;
      }
      quantizeWeightsAndBias(
        n,
        op,
        op === 'Conv' ? convWeights : gemmWeights,
        minRealRange,
        inits,
        names,
        params,
        dqInitializer,
        biasAdjusted,
        opts.roundedWeights,
      );
      layers.push({
        node: nodeLabel(n),
        opType: op,
        planIndex: nodeIndex.get(n)!,
        quantInput: n.input![0]!,
        quantOutput: n.output![0]!,
        ...(n.input?.[2] ? { quantBias: n.input[2] } : {}),
      });
      continue;
    }
    if (!OWN_RANGE_OPS.has(op)) continue; // direct ops: shape inputs etc. stay as they are
    // Constant inputs of Add/Mul/Concat: quantized with the activation type over their own range, or,
    // when every value is an integer the type holds, with scale 1 and zero point 0, which keeps them
    // exact (the count maps of prepare.ts's depthwise pools: 4, 6 and 9 are not all steps of 9/255).
    n.input = (n.input ?? []).map((i) => {
      const c = inits.get(i);
      if (!c || c.dataType !== DataType.FLOAT) return i;
      const values = tensorToFloat32(c);
      let mn = Infinity;
      let mx = -Infinity;
      let integers = true;
      for (const v of values) {
        if (v < mn) mn = v;
        if (v > mx) mx = v;
        if (!Number.isInteger(v)) integers = false;
      }
      const p =
        integers && mn >= qmin && mx <= qmax
          ? { scale: 1, zeroPoint: 0 }
          : activationParams({ min: mn, max: mx }, activationType, false, minRealRange);
      const qv = new Float64Array(values.length);
      for (let k = 0; k < values.length; k++) qv[k] = quantizeValue(values[k]!, p.scale, p.zeroPoint, qmin, qmax);
      const dims = (c.dims ?? []).map(Number);
      const arr = activationType === 'uint8' ? Uint8Array.from(qv) : activationType === 'int8' ? Int8Array.from(qv) : Uint16Array.from(qv);
      const qt = makeTensor(names.take(`${i}_quantized`), zpType.dataType, dims, arr);
      const st = makeTensor(names.take(`${i}_scale`), DataType.FLOAT, [], Float32Array.of(p.scale));
      const zt = makeTensor(names.take(`${i}_zero_point`), zpType.dataType, [], zpType.array(p.zeroPoint));
      newInits.push(qt, st, zt);
      const out = names.take(`${i}_DequantizeLinear_Output`);
      weightDqs.push(
        makeNode(
          'DequantizeLinear',
          [qt.name!, st.name!, zt.name!],
          [out],
          {},
          names.take(`${i}_DequantizeLinear`),
          qdqDomain || undefined,
        ),
      );
      return out;
    });
  }

  const ordered: Node[] = [...weightDqs, ...(after.get(null) ?? [])];
  for (const n of g.node ?? []) {
    ordered.push(n);
    ordered.push(...(after.get(n) ?? []));
  }
  g.node = ordered;
  g.initializer = [...(g.initializer ?? []), ...newInits];
  removeUnusedInitializers(g);
  if (qdqDomain && !(model.opsetImport ?? []).some((o) => o.domain === qdqDomain)) {
    model.opsetImport.push(onnx.OperatorSetIdProto.create({ domain: qdqDomain, version: 1 }));
  }
  return { model, tensors, dequantized, biasAdjusted, layers };
}

function quantizeWeightsAndBias(
  n: Node,
  op: string,
  scheme: WeightScheme,
  minRealRange: number | undefined,
  inits: Map<string, onnx.ITensorProto>,
  names: NameAllocator,
  params: Map<string, { p: QuantParams; scaleName: string; zpName: string }>,
  dqInitializer: (base: string, t: onnx.ITensorProto, s: onnx.ITensorProto, z: onnx.ITensorProto, axis?: number) => string,
  biasAdjusted: { node: string; channels: number[] }[],
  roundedWeights?: ReadonlyMap<string, RoundedWeights>,
): void {
  const w = inits.get(n.input![1]!)!;
  const dims = (w.dims ?? []).map(Number);
  let values = tensorToFloat32(w);
  let axis = 0;
  let bias = n.input?.[2] ? tensorToFloat32(inits.get(n.input[2])!) : undefined;
  if (op === 'Gemm') {
    axis = attrInt(n, 'transB', 0) ? 0 : 1;
    // QGemm needs beta = 1; alpha is folded into the weights so the bias scale is s_a × s_w.
    const alpha = attrFloat(n, 'alpha', 1);
    const beta = attrFloat(n, 'beta', 1);
    if (alpha !== 1) values = values.map((v) => v * alpha);
    if (bias && beta !== 1) bias = bias.map((v) => v * beta);
    n.attribute = (n.attribute ?? []).filter((a) => a.name !== 'alpha' && a.name !== 'beta');
    if (getAttr(n, 'alpha') || getAttr(n, 'beta')) throw new Error('internal: Gemm attributes not cleared');
  }
  const inputScale = params.get(n.input![0]!)?.p.scale;
  if (inputScale === undefined) throw new Error(`internal: input of ${n.name} has no scale`);
  const wp = weightParams(values, dims, axis, scheme, minRealRange);
  let scales = wp.scales;
  let zeroPoints = wp.zeroPoints;
  if (bias) {
    const adj = adjustWeightScalesForBias(bias, inputScale, scales);
    scales = adj.scales;
    if (adj.adjusted.length) {
      biasAdjusted.push({ node: nodeLabel(n), channels: adj.adjusted });
      // A raised scale moves an asymmetric zero point (the minimum still maps to qmin).
      if (!scheme.symmetric)
        zeroPoints = zeroPoints.map((z, c) => (adj.adjusted.includes(c) ? asymmetricZeroPoint(wp.mins[c]!, scales[c]!, scheme.type) : z));
    }
  }
  const base = n.input![1]!;
  const rounded = roundedWeights?.get(base);
  const qw = rounded
    ? useRoundedWeights(base, rounded, values, dims, axis, scheme, scales, zeroPoints)
    : quantizeWeights(values, dims, axis, scheme, scales, zeroPoints);
  const wType = WEIGHT_DATA_TYPE[scheme.type];
  // Per-tensor parameters are scalars (no axis), the form every provider's node-unit check accepts.
  const paramDims = scheme.perChannel ? [scales.length] : [];
  const wOut = dqInitializer(
    base,
    makeTensor(names.take(`${base}_quantized`), wType, dims, qw.data),
    makeTensor(names.take(`${base}_scale`), DataType.FLOAT, paramDims, scales),
    makeTensor(names.take(`${base}_zero_point`), wType, paramDims, qw.zeroPoints),
    scheme.perChannel ? axis : undefined,
  );
  const ins = [n.input![0]!, wOut];
  if (bias) {
    const qb = quantizeBias(bias, inputScale, scales);
    const bBase = n.input![2]!;
    ins.push(
      dqInitializer(
        bBase,
        makeTensor(names.take(`${bBase}_quantized`), DataType.INT32, [bias.length], qb.data),
        makeTensor(names.take(`${bBase}_quantized_scale`), DataType.FLOAT, scheme.perChannel ? [qb.scales.length] : [], qb.scales),
        makeTensor(
          names.take(`${bBase}_quantized_zero_point`),
          DataType.INT32,
          scheme.perChannel ? [qb.scales.length] : [],
          new Int32Array(qb.scales.length),
        ),
        scheme.perChannel ? 0 : undefined,
      ),
    );
  }
  n.input = ins;
}
