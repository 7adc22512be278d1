/**
 * Preparation before calibration: exact graph rewrites that make the float model quantize well
 * and fuse well. Every rewrite here keeps the float outputs equal up to float rounding.
 *
 *  1. opset upgrade to 13 (per-channel Q/DQ needs it), handling the ops whose semantics changed;
 *  2. Dropout / Identity removal;
 *  3. BatchNormalization folded into the preceding Conv;
 *  4. Flatten(axis 0|1) → Reshape, which ORT runs directly on 8-bit data (Flatten it does not);
 *  5. AveragePool → 1×1 Conv swapped to 1×1 Conv → AveragePool where it pools fewer channels
 *     (measured on the built Inception V2: the quantized avg-pool was 31 % of the INT8 time).
 * And, once the tensor shapes are known (`poolsToDepthwise`, for ORT's CPU kernels):
 *  6. AveragePool → depthwise Conv with constant weights, times a constant per-position count map
 *     where the pool leaves padding out of its averages (docs/ARCHITECTURE.md, "Models and quantization").
 */
import { attrFloat, attrInt, attrInts, DataType, getAttr, makeNode, makeTensor, onnx, opsetVersion, tensorToFloat32 } from '../onnx.js';
import {
  consumerMap,
  graphOutputNames,
  initializerMap,
  NameAllocator,
  producerMap,
  removeUnusedInitializers,
  renameInputs,
  type Node,
} from './graph.js';

export const TARGET_OPSET = 13;

export interface TensorInfo {
  /** ORT type name, e.g. 'float32', 'int64' */
  type: string;
  dims: (number | string)[];
}

export interface PrepareOptions {
  /** Shapes of the original model's tensors (from ORT), used where an upgrade depends on rank. */
  shapes?: Map<string, TensorInfo>;
  /** Skip the avg-pool/1×1-conv swap (to measure it). */
  poolRewrite?: boolean;
}

export interface PrepareResult {
  model: onnx.ModelProto;
  /** One line per rewrite kind with its count, for the report. */
  rewrites: string[];
}

export class UnsupportedModelError extends Error {
  override name = 'UnsupportedModelError';
}

/** Ops whose float semantics did not change between opset 7 and 13. */
const UNCHANGED_SINCE_7 = new Set([
  'Conv',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
  'GlobalMaxPool',
  'Relu',
  'LeakyRelu',
  'Sigmoid',
  'Tanh',
  'Concat',
  'Add',
  'Sub',
  'Mul',
  'Div',
  'Sum',
  'Max',
  'Min',
  'Mean',
  'Flatten',
  'Transpose',
  'LRN',
  'MatMul',
  'Identity',
  'Dropout',
  'Shape',
  'Cast',
  'Exp',
  'Log',
  'Sqrt',
  'Neg',
  'Abs',
  'PRelu',
  'Elu',
  'Selu',
  'Softplus',
  'Pow',
  'Gather',
  'InstanceNormalization',
  'ArgMax',
  'ArgMin',
  'Constant',
  'Tile',
  'ReduceMean',
  'ReduceMax',
  'ReduceMin',
  'ConvTranspose',
  'HardSigmoid',
  'Reciprocal',
  'Floor',
  'Ceil',
]);

function dropAttrs(n: Node, names: string[]): void {
  n.attribute = (n.attribute ?? []).filter((a) => !names.includes(a.name ?? ''));
}

function setIntAttr(n: Node, name: string, value: number): void {
  dropAttrs(n, [name]);
  (n.attribute ??= []).push(onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value }));
}

function label(n: Node): string {
  return `${n.opType} node "${n.name || n.output?.[0] || '?'}"`;
}

/** Upgrades the default-domain opset to 13; refuses ops it cannot convert exactly. */
function upgradeOpset(model: onnx.ModelProto, shapes: Map<string, TensorInfo> | undefined, rewrites: string[]): void {
  const from = opsetVersion(model) ?? 1;
  if (from >= TARGET_OPSET) return;
  const g = model.graph!;
  const names = new NameAllocator(g);
  const newInits: onnx.ITensorProto[] = [];
  const int64Input = (base: string, values: number[]): string => {
    const name = names.take(base);
    newInits.push(makeTensor(name, DataType.INT64, [values.length], BigInt64Array.from(values.map(BigInt))));
    return name;
  };
  const unsupported: string[] = [];
  for (const n of g.node ?? []) {
    if (n.domain && n.domain !== 'ai.onnx') continue;
    const op = n.opType ?? '';
    switch (op) {
      case 'Softmax':
      case 'LogSoftmax':
      case 'Hardmax': {
        // Before 13 these flatten the input to 2-D at `axis` (default 1); from 13 they act on one axis
        // (default -1). They agree only when `axis` is the last dimension.
        const axis = attrInt(n, 'axis', 1);
        const rank = shapes?.get(n.input?.[0] ?? '')?.dims.length;
        if (rank === undefined) {
          throw new UnsupportedModelError(`${label(n)}: cannot upgrade to opset 13 without knowing its input rank`);
        }
        const a = axis < 0 ? axis + rank : axis;
        if (a !== rank - 1) {
          throw new UnsupportedModelError(
            `${label(n)}: opset ${from} ${op} over the flattened dims ${a}..${rank - 1} has no single-axis opset-13 equivalent`,
          );
        }
        setIntAttr(n, 'axis', a);
        break;
      }
      case 'BatchNormalization': {
        if (getAttr(n, 'spatial') && attrInt(n, 'spatial', 1) !== 1) {
          throw new UnsupportedModelError(`${label(n)}: spatial=0 (per-element) batch normalization is not supported`);
        }
        dropAttrs(n, ['spatial', 'is_test', 'consumed_inputs']);
        // Training-only outputs (running mean/var …) are not produced in inference.
        if ((n.output?.length ?? 0) > 1) n.output = [n.output![0]!];
        break;
      }
      case 'Reshape': {
        if (getAttr(n, 'shape')) {
          n.input = [n.input![0]!, int64Input(`${n.name || n.output![0]}_shape`, attrInts(n, 'shape'))];
          dropAttrs(n, ['shape']);
        }
        break;
      }
      case 'Squeeze':
      case 'Unsqueeze': {
        if (getAttr(n, 'axes')) {
          n.input = [n.input![0]!, int64Input(`${n.name || n.output![0]}_axes`, attrInts(n, 'axes'))];
          dropAttrs(n, ['axes']);
        }
        break;
      }
      case 'Gemm':
        dropAttrs(n, ['broadcast']);
        break;
      case 'Dropout':
        // Removed by the next step whatever its attributes (inference).
        break;
      case 'Clip': {
        if (from < 11) {
          const lo = attrFloat(n, 'min', -3.4028234663852886e38);
          const hi = attrFloat(n, 'max', 3.4028234663852886e38);
          const loName = names.take(`${n.name || n.output![0]}_min`);
          const hiName = names.take(`${n.name || n.output![0]}_max`);
          newInits.push(makeTensor(loName, DataType.FLOAT, [], Float32Array.of(lo)));
          newInits.push(makeTensor(hiName, DataType.FLOAT, [], Float32Array.of(hi)));
          n.input = [n.input![0]!, loName, hiName];
          dropAttrs(n, ['min', 'max']);
        }
        break;
      }
      default:
        if (!UNCHANGED_SINCE_7.has(op) || from < 7) unsupported.push(`${op} ("${n.name || n.output?.[0]}")`);
    }
    dropAttrs(n, ['consumed_inputs']);
  }
  if (unsupported.length > 0) {
    throw new UnsupportedModelError(
      `cannot upgrade opset ${from} → ${TARGET_OPSET}: no exact conversion for ${[...new Set(unsupported)].slice(0, 10).join(', ')}`,
    );
  }
  g.initializer = [...(g.initializer ?? []), ...newInits];
  for (const o of model.opsetImport ?? []) {
    if (!o.domain || o.domain === 'ai.onnx') o.version = TARGET_OPSET;
  }
  rewrites.push(`opset ${from} → ${TARGET_OPSET}`);
}

/** Dropout and Identity pass their input through at inference. */
function removePassThrough(g: onnx.IGraphProto): number {
  const outputs = graphOutputNames(g);
  let removed = 0;
  const keep: Node[] = [];
  for (const n of g.node ?? []) {
    const isPass = n.opType === 'Identity' || n.opType === 'Dropout';
    const out = n.output?.[0];
    const inp = n.input?.[0];
    // Dropout's mask output must be unused; a pass-through feeding a graph output keeps that name.
    const maskUsed = n.opType === 'Dropout' && (n.output?.length ?? 0) > 1 && n.output![1] !== '';
    if (isPass && out && inp && !outputs.has(out) && !maskUsed && (!n.domain || n.domain === 'ai.onnx')) {
      renameInputs(g, out, inp);
      removed++;
      continue;
    }
    keep.push(n);
  }
  g.node = keep;
  return removed;
}

/**
 * Writes `values` as little-endian float32 over the raw_data of `t` when it holds exactly that many
 * float32 values, and returns that raw_data; undefined (nothing written) otherwise.
 */
function overwriteFloatRaw(t: onnx.ITensorProto, values: Float32Array): Uint8Array | undefined {
  const raw = t.rawData;
  if (t.dataType !== DataType.FLOAT || !(raw instanceof Uint8Array) || raw.byteLength !== values.length * 4) return undefined;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
  return raw;
}

/** Conv → BatchNormalization becomes one Conv: W' = W·γ/σ, b' = (b − μ)·γ/σ + β, in float64. */
function foldBatchNorm(g: onnx.IGraphProto): number {
  const inits = initializerMap(g);
  const consumers = consumerMap(g);
  const producers = producerMap(g);
  const outputs = graphOutputNames(g);
  const names = new NameAllocator(g);
  const removed = new Set<Node>();
  let folded = 0;
  for (const bn of g.node ?? []) {
    if (bn.opType !== 'BatchNormalization' || (bn.domain && bn.domain !== 'ai.onnx')) continue;
    const x = bn.input?.[0] ?? '';
    const conv = producers.get(x);
    if (conv?.opType !== 'Conv' || removed.has(conv)) continue;
    if ((consumers.get(x)?.length ?? 0) !== 1 || outputs.has(x)) continue;
    const [, scaleN, biasN, meanN, varN] = bn.input ?? [];
    const params = [scaleN, biasN, meanN, varN].map((n) => (n ? inits.get(n) : undefined));
    const w = inits.get(conv.input?.[1] ?? '');
    if (!w || params.some((p) => !p)) continue;
    const [gamma, beta, mean, variance] = params.map((p) => tensorToFloat32(p!));
    const eps = attrFloat(bn, 'epsilon', 1e-5);
    const weights = tensorToFloat32(w);
    const dims = (w.dims ?? []).map(Number);
    const cout = dims[0]!;
    if (gamma!.length !== cout) continue;
    const perOut = weights.length / cout;
    const oldBias = conv.input?.[2] ? inits.get(conv.input[2]) : undefined;
    if (conv.input?.[2] && !oldBias) continue; // bias computed at run time: leave the BN alone
    const b0 = oldBias ? tensorToFloat32(oldBias) : new Float32Array(cout);
    const newW = new Float32Array(weights.length);
    const newB = new Float32Array(cout);
    for (let c = 0; c < cout; c++) {
      const k = gamma![c]! / Math.sqrt(variance![c]! + eps);
      for (let i = 0; i < perOut; i++) newW[c * perOut + i] = weights[c * perOut + i]! * k;
      newB[c] = (b0[c]! - mean![c]!) * k + beta![c]!;
    }
    // Fresh initializer names: the originals may be shared with other nodes.
    const wName = names.take(`${conv.input![1]}_bnfold`);
    const bName = names.take(`${conv.output![0]}_bias_bnfold`);
    // A weight only this Conv reads is rewritten in its own bytes (the model is prepareModel's copy):
    // the folded weights then take no memory beyond the model's.
    const exclusive = (consumers.get(conv.input![1]!)?.length ?? 0) === 1 && !outputs.has(conv.input![1]!);
    const inPlace = exclusive ? overwriteFloatRaw(w, newW) : undefined;
    g.initializer!.push(
      inPlace
        ? onnx.TensorProto.create({ name: wName, dataType: DataType.FLOAT, dims, rawData: inPlace })
        : makeTensor(wName, DataType.FLOAT, dims, newW),
    );
    g.initializer!.push(makeTensor(bName, DataType.FLOAT, [cout], newB));
    conv.input = [conv.input![0]!, wName, bName];
    conv.output = [bn.output![0]!];
    removed.add(bn);
    folded++;
  }
  g.node = (g.node ?? []).filter((n) => !removed.has(n));
  return folded;
}

/** Flatten with axis 0 or 1 is Reshape to [1,-1] / [0,-1] for any input shape. */
function flattenToReshape(g: onnx.IGraphProto): number {
  const names = new NameAllocator(g);
  let n = 0;
  for (const node of g.node ?? []) {
    if (node.opType !== 'Flatten' || (node.domain && node.domain !== 'ai.onnx')) continue;
    const axis = attrInt(node, 'axis', 1);
    if (axis !== 0 && axis !== 1) continue;
    const shapeName = names.take(`${node.output![0]}_shape`);
    g.initializer!.push(makeTensor(shapeName, DataType.INT64, [2], BigInt64Array.of(axis === 0 ? 1n : 0n, -1n)));
    node.opType = 'Reshape';
    node.input = [node.input![0]!, shapeName];
    node.attribute = [];
    n++;
  }
  return n;
}

/**
 * AveragePool (stride 1) → 1×1 Conv becomes 1×1 Conv → AveragePool: both are linear per position,
 * so the order does not matter except for the bias. With count_include_pad=0 the average of a
 * constant bias is the bias, so the swap is exact; with count_include_pad=1 padding zeros would
 * shrink the bias at the borders, so the bias is added after the pool instead. Only done where
 * the Conv has fewer output than input channels (the pool then touches fewer values).
 */
function swapAvgPoolConv(g: onnx.IGraphProto): number {
  const inits = initializerMap(g);
  const consumers = consumerMap(g);
  const outputs = graphOutputNames(g);
  const names = new NameAllocator(g);
  let swapped = 0;
  const newNodes: Node[] = [];
  const replaced = new Map<Node, Node[]>();
  for (const pool of g.node ?? []) {
    if (pool.opType !== 'AveragePool' || (pool.domain && pool.domain !== 'ai.onnx')) continue;
    const pooled = pool.output?.[0] ?? '';
    const users = consumers.get(pooled) ?? [];
    if (users.length !== 1 || outputs.has(pooled)) continue;
    const conv = users[0]!;
    if (conv.opType !== 'Conv' || conv.input?.[0] !== pooled) continue;
    const w = inits.get(conv.input?.[1] ?? '');
    if (!w) continue;
    const dims = (w.dims ?? []).map(Number);
    if (dims.length !== 4 || dims[2] !== 1 || dims[3] !== 1) continue;
    if (attrInt(conv, 'group', 1) !== 1) continue;
    if (attrInts(conv, 'strides', [1, 1]).some((s) => s !== 1)) continue;
    if (attrInts(conv, 'pads', [0, 0, 0, 0]).some((p) => p !== 0)) continue;
    if (getAttr(conv, 'auto_pad') && attrIntString(conv) !== 'NOTSET') continue;
    if (attrInts(pool, 'strides', [1, 1]).some((s) => s !== 1)) continue;
    if (dims[0]! >= dims[1]!) continue; // no gain: the pool would touch as many or more values
    const biasName = conv.input?.[2];
    const bias = biasName ? inits.get(biasName) : undefined;
    if (biasName && !bias) continue;
    const includePad = attrInt(pool, 'count_include_pad', 0) === 1;
    const biasIsZero = !bias || tensorToFloat32(bias).every((v) => v === 0);

    const x = pool.input![0]!;
    const convOut = names.take(`${conv.output![0]}_prepool`);
    const finalOut = conv.output![0]!;
    const newConv = onnx.NodeProto.create({ ...conv, input: [...conv.input!], output: [convOut] });
    newConv.input[0] = x;
    const chain: Node[] = [newConv];
    if (includePad && !biasIsZero) {
      newConv.input = newConv.input.slice(0, 2);
      const pooledOut = names.take(`${finalOut}_pooled`);
      const biasShaped = names.take(`${biasName}_nchw`);
      g.initializer!.push(makeTensor(biasShaped, DataType.FLOAT, [1, dims[0]!, 1, 1], tensorToFloat32(bias!)));
      chain.push(onnx.NodeProto.create({ ...pool, input: [convOut], output: [pooledOut] }));
      chain.push(makeNode('Add', [pooledOut, biasShaped], [finalOut], {}, names.take(`${finalOut}_bias_add`)));
    } else {
      chain.push(onnx.NodeProto.create({ ...pool, input: [convOut], output: [finalOut] }));
    }
    replaced.set(pool, []);
    replaced.set(conv, chain);
    swapped++;
  }
  for (const n of g.node ?? []) {
    const r = replaced.get(n);
    if (r) newNodes.push(...r);
    else newNodes.push(n);
  }
  g.node = newNodes;
  return swapped;
}

/** A pool rewritten with a count map: what the quantizer needs to keep its Mul exact inside the image. */
export interface CountMap {
  /** the depthwise conv's output, the Mul's first input */
  windowSums: string;
  /** the Mul's node name (Relu folding may rename its output) */
  mul: string;
  /** the map's value where the window is whole: L / (kh · kw) */
  inside: number;
}

/** The largest count-map value a pool may need (it is an 8-bit constant input of the Mul, kept exact). */
const MAX_COUNT_MAP = 127;

/**
 * AveragePool (2-D, no ceil_mode or dilation) → depthwise Conv (group = channels) whose weights are all
 * 1/L, and, where the pool leaves padding out of its averages (count_include_pad=0 with pads), a Mul by
 * a constant [1, 1, H, W] map of L / n(p), n(p) being the number of input values the window at p
 * covers and L their least common multiple. So the float output is the pool's up to rounding, and
 * both constants are exact in 8 bits: the weights are one per-channel step each, the map holds
 * integers (quantized with scale 1). Why: ORT's QLinearAveragePool is a scalar loop (11 % of the built
 * Inception V2's INT8 time at 2 threads, 12 % of InceptionV3's, after the swap above), while a depthwise
 * QLinearConv runs on MLAS's vector kernels; the Mul, a QLinearMul, costs less than the pool did
 * (README, "Quantizing to INT8"). `shapes` are the prepared model's (probeTensors); the conv's new output
 * is added to them. Returns how many pools were rewritten and those that needed the map: the
 * emitter gives their window sums the Mul output's parameters with the scale ÷ `inside` (same zero
 * point), so inside the image the QLinearMul multiplies by exactly 1 and adds no rounding.
 */
export function poolsToDepthwise(g: onnx.IGraphProto, shapes: Map<string, TensorInfo>): { pools: number; countMaps: CountMap[] } {
  const names = new NameAllocator(g);
  let pools = 0;
  const countMaps: CountMap[] = [];
  const newNodes: Node[] = [];
  g.initializer ??= [];
  for (const pool of g.node ?? []) {
    const chain = pool.opType === 'AveragePool' && (!pool.domain || pool.domain === 'ai.onnx') ? depthwiseChain(pool) : undefined;
    if (chain) {
      newNodes.push(...chain.nodes);
      pools++;
      if (chain.countMap) countMaps.push(chain.countMap);
    } else {
      newNodes.push(pool);
    }
  }
  g.node = newNodes;
  return { pools, countMaps };

  function depthwiseChain(pool: Node): { nodes: Node[]; countMap?: CountMap } | undefined {
    const x = pool.input?.[0];
    const y = pool.output?.[0];
    const inDims = x ? shapes.get(x)?.dims : undefined;
    const outDims = y ? shapes.get(y)?.dims : undefined;
    if (!x || !y || inDims?.length !== 4 || outDims?.length !== 4) return undefined;
    const [, c, h, w] = inDims;
    const [, , oh, ow] = outDims;
    if (![c, h, w, oh, ow].every((d) => typeof d === 'number' && d > 0)) return undefined;
    const channels = c as number;
    const kernel = attrInts(pool, 'kernel_shape');
    const strides = attrInts(pool, 'strides', [1, 1]);
    const pads = attrInts(pool, 'pads', [0, 0, 0, 0]);
    if (kernel.length !== 2 || strides.length !== 2 || pads.length !== 4) return undefined;
    if (attrInt(pool, 'ceil_mode', 0) !== 0 || attrInts(pool, 'dilations', [1, 1]).some((d) => d !== 1)) return undefined;
    if (getAttr(pool, 'auto_pad') && attrIntString(pool) !== 'NOTSET') return undefined;
    const [kh, kw] = kernel as [number, number];
    const padded = pads.some((p) => p !== 0);
    const excludePad = padded && attrInt(pool, 'count_include_pad', 0) === 0;
    // n(p) per output row and column: the window's input positions inside the image.
    const covered = (out: number, size: number, k: number, stride: number, padBegin: number) =>
      Array.from({ length: out }, (_, i) => {
        const start = i * stride - padBegin;
        return Math.min(start + k, size) - Math.max(start, 0);
      });
    const rows = covered(oh as number, h as number, kh, strides[0]!, pads[0]!);
    const cols = covered(ow as number, w as number, kw, strides[1]!, pads[1]!);
    if (rows.some((n) => n <= 0) || cols.some((n) => n <= 0)) return undefined;
    let l = kh * kw;
    if (excludePad) for (const r of new Set(rows)) for (const col of new Set(cols)) l = lcm(l, r * col);
    const minCount = excludePad ? Math.min(...rows) * Math.min(...cols) : l;
    if (l / minCount > MAX_COUNT_MAP) return undefined;

    const base = pool.name || y;
    const weights = names.take(`${base}_depthwise_w`);
    g.initializer!.push(makeTensor(weights, DataType.FLOAT, [channels, 1, kh, kw], new Float32Array(channels * kh * kw).fill(1 / l)));
    // The conv keeps the pool's name, so --exclude and the reports still find it.
    const convAttrs = { group: channels, kernel_shape: [kh, kw], strides, pads };
    if (!excludePad) return { nodes: [makeNode('Conv', [x, weights], [y], convAttrs, pool.name ?? undefined)] };
    const sums = names.take(`${y}_window_sum`);
    const map = names.take(`${base}_count_map`);
    const values = new Float32Array(rows.length * cols.length);
    for (let i = 0; i < rows.length; i++) for (let j = 0; j < cols.length; j++) values[i * cols.length + j] = l / (rows[i]! * cols[j]!);
    g.initializer!.push(makeTensor(map, DataType.FLOAT, [1, 1, rows.length, cols.length], values));
    shapes.set(sums, { type: 'float32', dims: [...outDims] });
    const mul = makeNode('Mul', [sums, map], [y], {}, names.take(`${base}_count`));
    return {
      nodes: [makeNode('Conv', [x, weights], [sums], convAttrs, pool.name ?? undefined), mul],
      countMap: { windowSums: sums, mul: mul.name, inside: l / (kh * kw) },
    };
  }
}

function lcm(a: number, b: number): number {
  const gcd = (p: number, q: number): number => (q === 0 ? p : gcd(q, p % q));
  return (a / gcd(a, b)) * b;
}

function attrIntString(n: Node): string {
  const a = getAttr(n, 'auto_pad');
  return a?.s ? new TextDecoder().decode(a.s) : 'NOTSET';
}

/** Applies the preparation steps to a copy of `model`. */
export function prepareModel(original: onnx.IModelProto, opts: PrepareOptions = {}): PrepareResult {
  const model = onnx.ModelProto.decode(onnx.ModelProto.encode(original).finish());
  const g = model.graph;
  if (!g || (g.node ?? []).length === 0) throw new UnsupportedModelError('model has no graph nodes');
  const rewrites: string[] = [];
  g.initializer ??= [];

  // IR ≥ 4 lets initializers stay out of the graph inputs; listed as inputs they count as
  // overridable, which stops ORT from treating weights as constants (no fusion, no folding).
  const inits = new Set(g.initializer.map((t) => t.name ?? ''));
  const before = (g.input ?? []).length;
  g.input = (g.input ?? []).filter((i) => !inits.has(i.name ?? ''));
  if (g.input.length !== before) rewrites.push(`${before - g.input.length} initializers removed from graph inputs`);
  if (Number(model.irVersion) < 7) model.irVersion = 7;

  upgradeOpset(model, opts.shapes, rewrites);
  const passes = removePassThrough(g);
  if (passes) rewrites.push(`${passes} Dropout/Identity removed`);
  const bn = foldBatchNorm(g);
  if (bn) rewrites.push(`${bn} BatchNormalization folded into Conv`);
  const flat = flattenToReshape(g);
  if (flat) rewrites.push(`${flat} Flatten → Reshape`);
  if (opts.poolRewrite !== false) {
    const sw = swapAvgPoolConv(g);
    if (sw) rewrites.push(`${sw} AveragePool→1×1 Conv swapped to 1×1 Conv→AveragePool`);
  }
  removeUnusedInitializers(g);
  // Shapes recorded for the old graph may no longer hold (renamed or rewritten tensors).
  g.valueInfo = [];
  return { model, rewrites };
}
