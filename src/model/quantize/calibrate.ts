/**
 * Calibration: run the prepared float model over the calibration inputs with the tensors to
 * quantize exposed as graph outputs, and reduce each tensor to a range (MinMax, Percentile, Entropy,
 * or MSE: the range whose quantizer gives the least expected squared error on the tensor's histogram). Streams one input at a time: each tensor's running statistic (min/max, or a fixed
 * 2048-bin histogram that re-bins when the range grows, see histogram.ts) is updated from one
 * input's activations, which are then dropped before the next input runs. Memory is the session
 * plus one input's activations, whatever the number of inputs.
 */
import * as ort from 'onnxruntime-node';
import { DataType, encodeModel, onnx, tensorElementCount } from '../onnx.js';
import { AbsHistogram, entropyRange, mseRange, percentileRange, SignedHistogram, type QuantGrid } from './histogram.js';
import { activationParams, quantRange, type ActivationType } from './numeric.js';
import { collectGarbage } from './graph.js';
import type { TensorInfo } from './prepare.js';

export type CalibrationMethod = 'minmax' | 'percentile' | 'entropy' | 'mse';

export const CALIBRATION_METHOD_NAMES: readonly CalibrationMethod[] = ['minmax', 'percentile', 'entropy', 'mse'];

export interface Range {
  min: number;
  max: number;
}

/**
 * A copy of `model` whose graph outputs also include `names` (type left for ORT to infer). Only the
 * model and graph records and the output list are new: nodes and initializers are `model`'s own
 * objects (the weights are not copied; the copy is for encoding, not for editing).
 */
export function withExtraOutputs(model: onnx.IModelProto, names: Iterable<string>): onnx.ModelProto {
  const g = model.graph ?? {};
  const output = [...(g.output ?? [])];
  const present = new Set(output.map((o) => o.name));
  for (const n of names) {
    if (present.has(n)) continue;
    present.add(n);
    output.push(onnx.ValueInfoProto.create({ name: n }));
  }
  return onnx.ModelProto.create({ ...model, graph: onnx.GraphProto.create({ ...g, output }) });
}

function calibrationSessionOptions(): ort.InferenceSession.SessionOptions {
  // Optimizations off: fused or folded nodes would hide the tensors we want to observe.
  return {
    graphOptimizationLevel: 'disabled',
    executionProviders: ['cpu'],
    intraOpNumThreads: 2,
    // No arena: it would keep, until the session is released, the most memory any run needed.
    enableCpuMemArena: false,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

/** A session on `model` (a decoded model, encoded here; or an ONNX file's path, read by ORT). */
export async function createSession(
  model: onnx.IModelProto | string,
  options: ort.InferenceSession.SessionOptions = calibrationSessionOptions(),
): Promise<ort.InferenceSession> {
  if (typeof model === 'string') return ort.InferenceSession.create(model, options);
  return ort.InferenceSession.create(encodeModel(model), options);
}

/** Float initializers at least this large are left out of the model probeTensors hands to ORT. */
const PROBE_WEIGHT_ELEMENTS = 1024;
const PROBE_DROPPABLE = new Set<number>([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16]);

/**
 * The graph of `model` with its large float initializers (the weights) turned into graph inputs of
 * the same type and shape: ORT infers the same types and shapes for it without holding the weights.
 * Small and integer initializers (shapes, axes, Clip bounds, Resize scales) stay, as shape inference
 * may read their values.
 */
function weightlessForProbe(model: onnx.IModelProto): onnx.ModelProto {
  const g = model.graph ?? {};
  const initializer: onnx.ITensorProto[] = [];
  const dropped = new Map<string, onnx.IValueInfoProto>();
  for (const t of g.initializer ?? []) {
    const dims = (t.dims ?? []).map(Number);
    if (t.name && PROBE_DROPPABLE.has(t.dataType ?? 0) && dims.length > 0 && tensorElementCount(dims) >= PROBE_WEIGHT_ELEMENTS) {
      dropped.set(
        t.name,
        onnx.ValueInfoProto.create({
          name: t.name,
          type: { tensorType: { elemType: t.dataType, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
        }),
      );
    } else {
      initializer.push(t);
    }
  }
  if (dropped.size === 0) return onnx.ModelProto.create({ ...model });
  // An old model may list its initializers as inputs too: that input is replaced by the shaped one.
  const input = [...(g.input ?? []).filter((i) => !dropped.has(i.name ?? '')), ...dropped.values()];
  return onnx.ModelProto.create({ ...model, graph: onnx.GraphProto.create({ ...g, initializer, input }) });
}

/**
 * Element type and shape of every node output (and of the graph inputs), as ORT infers them. The
 * session ORT builds for this never holds the weights (see weightlessForProbe).
 */
export async function probeTensors(model: onnx.IModelProto): Promise<Map<string, TensorInfo>> {
  const all: string[] = [];
  for (const n of model.graph?.node ?? []) for (const o of n.output ?? []) if (o) all.push(o);
  const probe = weightlessForProbe(model);
  const weights = new Set((probe.graph?.input ?? []).map((i) => i.name ?? ''));
  for (const i of model.graph?.input ?? []) weights.delete(i.name ?? '');
  const session = await createSession(withExtraOutputs(probe, all));
  try {
    const info = new Map<string, TensorInfo>();
    for (const m of [...session.inputMetadata, ...session.outputMetadata]) {
      if (m.isTensor && !weights.has(m.name)) info.set(m.name, { type: String(m.type), dims: [...m.shape] });
    }
    return info;
  } finally {
    await session.release();
  }
}

interface Collector {
  add(values: Float32Array): void;
  range(): Range;
  /** numbers the collector keeps between inputs: constant, whatever the number of inputs */
  readonly heldValues: number;
}

class MinMaxCollector implements Collector {
  readonly heldValues = 2;
  private min = Infinity;
  private max = -Infinity;
  add(values: Float32Array): void {
    let mn = this.min;
    let mx = this.max;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    this.min = mn;
    this.max = mx;
  }
  range(): Range {
    return { min: this.min, max: this.max };
  }
}

class PercentileCollector implements Collector {
  private readonly h = new AbsHistogram(2048);
  constructor(private readonly percentile: number) {}
  get heldValues(): number {
    return this.h.counts.length + 3;
  }
  add(values: Float32Array): void {
    this.h.add(values);
  }
  range(): Range {
    return percentileRange(this.h.snapshot(), this.percentile);
  }
}

class EntropyCollector implements Collector {
  private readonly h = new SignedHistogram(2048);
  constructor(private readonly levels: number) {}
  get heldValues(): number {
    return this.h.counts.length + 3;
  }
  add(values: Float32Array): void {
    this.h.add(values);
  }
  range(): Range {
    const snap = this.h.snapshot();
    // The KL search must model the quantizer the tensor will get. The histogram's window is
    // symmetric, [-T, T]: an asymmetric 8-bit type spends all its levels on [0, T] when the tensor
    // is never negative (a ReLU output), i.e. twice `levels` over the window, and `levels` over it
    // otherwise. ORT's fixed 128 (TensorRT's symmetric int8) models a 4× coarser uint8 quantizer for
    // ReLU outputs and so clips far too much (measured on a trained InceptionV3: 5.5 dB layers).
    const bins = snap.min >= 0 ? 2 * this.levels : this.levels;
    // With as many levels as histogram bins, rounding costs nothing at this resolution: no clipping.
    if (bins >= snap.counts.length) return { min: snap.min, max: snap.max };
    return entropyRange(snap, bins);
  }
}

/** How a range becomes integers: what the MSE search models (the emitter's activationParams). */
export interface ActivationQuantizer {
  type: ActivationType;
  /** false for every target today: activations are asymmetric */
  symmetric?: boolean;
  minRealRange?: number;
}

/** The points activationParams maps a range to. */
export function quantGridOf(r: Range, q: ActivationQuantizer): QuantGrid {
  const { qmin, qmax } = quantRange(q.type, q.symmetric ?? false);
  const p = activationParams(r, q.type, q.symmetric ?? false, q.minRealRange);
  return { lo: (qmin - p.zeroPoint) * p.scale, step: p.scale, levels: qmax - qmin + 1 };
}

/**
 * Histogram of x over [-T, T] (4096 bins: 2048 over a ReLU output's [0, T]) reduced to the range of
 * least expected squared error (clip plus round) for the activation type's quantizer.
 */
class MseCollector implements Collector {
  private readonly h = new SignedHistogram(4096);
  constructor(private readonly quantizer: ActivationQuantizer) {}
  get heldValues(): number {
    return this.h.counts.length + 3;
  }
  add(values: Float32Array): void {
    this.h.add(values);
  }
  range(): Range {
    return mseRange(this.h.snapshot(), (r) => quantGridOf(r, this.quantizer));
  }
}

export interface CalibrateOptions {
  method: CalibrationMethod;
  /** Percentile method: the fraction of |x| kept, in percent (ORT default 99.999). */
  percentile?: number;
  /** Entropy method: levels of the activation type (256 for 8-bit, the default; 65536 for 16-bit). */
  levels?: number;
  /** MSE method: the quantizer the ranges are for (default uint8, asymmetric). */
  quantizer?: ActivationQuantizer;
  inputName: string;
  inputDims: number[];
  /** How many of the first inputs to hand back (for the per-layer SQNR check). */
  keepInputs?: number;
  onInput?: (done: number) => void;
}

export interface CalibrationResult {
  ranges: Map<string, Range>;
  inputs: number;
  kept: Float32Array[];
  /** What the calibrator held, for checking that it streams (tests). */
  stats: CalibrationStats;
}

export interface CalibrationStats {
  /** Most activation arrays held at once: one input's fetched tensors, never more. */
  maxActivationsHeld: number;
  /** Activation arrays still held when calibration ended (0: all dropped). */
  activationsHeldAtEnd: number;
  /** Numbers kept in per-tensor statistics (min/max, histogram bins): independent of the input count. */
  statisticValues: number;
}

/** A session calibrate can run: ORT's, or a wrapper around it. */
export type CalibrationSession = Pick<ort.InferenceSession, 'inputNames' | 'run'>;

/** Calibrates on a session created from `model` with `tensors` exposed, released when done. */
export async function calibrate(
  model: onnx.IModelProto,
  tensors: string[],
  inputs: AsyncIterable<Float32Array>,
  opts: CalibrateOptions,
): Promise<CalibrationResult> {
  checkCalibrateOptions(opts);
  const session = await createSession(withExtraOutputs(model, tensors));
  try {
    return await calibrateSession(session, tensors, inputs, opts);
  } finally {
    await session.release();
  }
}

function checkCalibrateOptions(opts: CalibrateOptions): void {
  const percentile = opts.percentile ?? 99.999;
  if (opts.method === 'percentile' && !(percentile > 0 && percentile <= 100)) {
    throw new Error(`percentile must be in (0, 100], got ${percentile}`);
  }
  if (!CALIBRATION_METHOD_NAMES.includes(opts.method)) {
    throw new Error(`unknown calibration method "${String(opts.method)}" (${CALIBRATION_METHOD_NAMES.join(', ')})`);
  }
}

/**
 * Calibrates on an existing session whose outputs include `tensors` (it may expose more: the caller
 * reuses it, e.g. as the float reference of the per-layer SQNR). One input at a time: its activations
 * update every tensor's statistic and are dropped before the next input runs.
 */
export async function calibrateSession(
  session: CalibrationSession,
  tensors: string[],
  inputs: AsyncIterable<Float32Array>,
  opts: CalibrateOptions,
): Promise<CalibrationResult> {
  checkCalibrateOptions(opts);
  const percentile = opts.percentile ?? 99.999;
  const make = (): Collector =>
    opts.method === 'minmax'
      ? new MinMaxCollector()
      : opts.method === 'percentile'
        ? new PercentileCollector(percentile)
        : opts.method === 'mse'
          ? new MseCollector(opts.quantizer ?? { type: 'uint8' })
          : new EntropyCollector(opts.levels ?? 256);
  const collectors = new Map<string, Collector>();
  for (const t of tensors) collectors.set(t, make());

  const expected = opts.inputDims.reduce((a, b) => a * b, 1);
  const graphInputs = new Set(session.inputNames);
  const fetches = tensors.filter((t) => !graphInputs.has(t));
  const kept: Float32Array[] = [];
  let count = 0;
  let held = 0;
  let maxHeld = 0;
  for await (const data of inputs) {
    if (data.length !== expected) {
      throw new Error(
        `calibration input ${count + 1} has ${data.length} values; the model input ${opts.inputName} needs ${expected} ([${opts.inputDims.join(',')}])`,
      );
    }
    if (kept.length < (opts.keepInputs ?? 0)) kept.push(data);
    const feed = new ort.Tensor('float32', data, opts.inputDims);
    let out: ort.InferenceSession.OnnxValueMapType | undefined =
      fetches.length > 0 ? await session.run({ [opts.inputName]: feed }, fetches) : {};
    held = Object.keys(out).length;
    maxHeld = Math.max(maxHeld, held);
    for (const t of tensors) {
      const value = graphInputs.has(t) ? data : (out[t]?.data as Float32Array | undefined);
      if (!value) throw new Error(`calibration: tensor ${t} was not produced`);
      collectors.get(t)!.add(value);
    }
    // This input's activations are not needed any more: let them go before the next run.
    for (const v of Object.values(out)) (v as ort.Tensor).dispose?.();
    out = undefined;
    held = 0;
    collectGarbage();
    count++;
    opts.onInput?.(count);
  }
  if (count === 0) throw new Error('no calibration inputs: give at least one image');
  const ranges = new Map<string, Range>();
  let statisticValues = 0;
  for (const [t, c] of collectors) {
    ranges.set(t, c.range());
    statisticValues += c.heldValues;
  }
  return { ranges, inputs: count, kept, stats: { maxActivationsHeld: maxHeld, activationsHeldAtEnd: held, statisticValues } };
}
