/**
 * Calibration: run the prepared float model over the calibration inputs with the tensors to
 * quantize exposed as graph outputs, and reduce each tensor to a range (MinMax, Percentile or
 * Entropy). Streams one input at a time: only per-tensor statistics are kept.
 */
import * as ort from 'onnxruntime-node';
import { encodeModel, onnx } from '../onnx.js';
import { AbsHistogram, entropyRange, percentileRange, SignedHistogram } from './histogram.js';
import type { TensorInfo } from './prepare.js';

export type CalibrationMethod = 'minmax' | 'percentile' | 'entropy';

export interface Range {
  min: number;
  max: number;
}

/** A copy of `model` whose graph outputs also include `names` (type left for ORT to infer). */
export function withExtraOutputs(model: onnx.IModelProto, names: Iterable<string>): onnx.ModelProto {
  const copy = onnx.ModelProto.decode(onnx.ModelProto.encode(model).finish());
  const g = copy.graph!;
  const present = new Set((g.output ?? []).map((o) => o.name));
  for (const n of names) {
    if (present.has(n)) continue;
    present.add(n);
    (g.output ??= []).push(onnx.ValueInfoProto.create({ name: n }));
  }
  return copy;
}

function calibrationSessionOptions(): ort.InferenceSession.SessionOptions {
  // Optimizations off: fused or folded nodes would hide the tensors we want to observe.
  return {
    graphOptimizationLevel: 'disabled',
    executionProviders: ['cpu'],
    intraOpNumThreads: 2,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

export async function createSession(
  model: onnx.IModelProto,
  options: ort.InferenceSession.SessionOptions = calibrationSessionOptions(),
): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model), options);
}

/** Element type and shape of every node output, as ORT infers them. */
export async function probeTensors(model: onnx.IModelProto): Promise<Map<string, TensorInfo>> {
  const all: string[] = [];
  for (const n of model.graph?.node ?? []) for (const o of n.output ?? []) if (o) all.push(o);
  const session = await createSession(withExtraOutputs(model, all));
  try {
    const info = new Map<string, TensorInfo>();
    for (const m of [...session.inputMetadata, ...session.outputMetadata]) {
      if (m.isTensor) info.set(m.name, { type: String(m.type), dims: [...m.shape] });
    }
    return info;
  } finally {
    await session.release();
  }
}

interface Collector {
  add(values: Float32Array): void;
  range(): Range;
}

class MinMaxCollector implements Collector {
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

export interface CalibrateOptions {
  method: CalibrationMethod;
  /** Percentile method: the fraction of |x| kept, in percent (ORT default 99.999). */
  percentile?: number;
  /** Entropy method: levels of the activation type (256 for 8-bit, the default; 65536 for 16-bit). */
  levels?: number;
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
}

export async function calibrate(
  model: onnx.IModelProto,
  tensors: string[],
  inputs: AsyncIterable<Float32Array>,
  opts: CalibrateOptions,
): Promise<CalibrationResult> {
  const percentile = opts.percentile ?? 99.999;
  if (opts.method === 'percentile' && !(percentile > 0 && percentile <= 100)) {
    throw new Error(`percentile must be in (0, 100], got ${percentile}`);
  }
  const make = (): Collector =>
    opts.method === 'minmax'
      ? new MinMaxCollector()
      : opts.method === 'percentile'
        ? new PercentileCollector(percentile)
        : opts.method === 'entropy'
          ? new EntropyCollector(opts.levels ?? 256)
          : (() => {
              throw new Error(`unknown calibration method "${String(opts.method)}" (minmax, percentile or entropy)`);
            })();
  const collectors = new Map<string, Collector>();
  for (const t of tensors) collectors.set(t, make());

  const expected = opts.inputDims.reduce((a, b) => a * b, 1);
  const session = await createSession(withExtraOutputs(model, tensors));
  const graphInputs = new Set(session.inputNames);
  const fetches = tensors.filter((t) => !graphInputs.has(t));
  const kept: Float32Array[] = [];
  let count = 0;
  try {
    for await (const data of inputs) {
      if (data.length !== expected) {
        throw new Error(
          `calibration input ${count + 1} has ${data.length} values; the model input ${opts.inputName} needs ${expected} ([${opts.inputDims.join(',')}])`,
        );
      }
      if (kept.length < (opts.keepInputs ?? 0)) kept.push(data);
      const feed = new ort.Tensor('float32', data, opts.inputDims);
      const out = fetches.length > 0 ? await session.run({ [opts.inputName]: feed }, fetches) : {};
      for (const t of tensors) {
        const value = graphInputs.has(t) ? data : (out[t]?.data as Float32Array | undefined);
        if (!value) throw new Error(`calibration: tensor ${t} was not produced`);
        collectors.get(t)!.add(value);
      }
      count++;
      opts.onInput?.(count);
    }
  } finally {
    await session.release();
  }
  if (count === 0) throw new Error('no calibration inputs: give at least one image');
  const ranges = new Map<string, Range>();
  for (const [t, c] of collectors) ranges.set(t, c.range());
  return { ranges, inputs: count, kept };
}
