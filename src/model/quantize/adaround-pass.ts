/**
 * AdaRound over a whole network (Nagel et al. 2020, section 5: layer by layer, sequentially): the
 * layers are visited generation by generation (layer-io.ts: layers of one generation never feed each
 * other). Each layer's inputs come from the QDQ network in which every upstream layer already has its
 * learned rounding, and its targets are the float network's outputs of that layer (after a folded
 * Relu) for the same images. The QDQ model is emitted again and its probe session rebuilt once per
 * generation, so a generation sees the rounding of all earlier ones. The result is the integer weights
 * for emitQdq's `roundedWeights`.
 *
 * Memory: one generation's distinct quantized input tensors and float outputs (each dropped after
 * its last reader), for `inputs.length` images, plus adaroundLayer's pool (capped at
 * maxPoolBytes) and the probe session.
 */
import cliProgress from 'cli-progress';
import * as ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { attrFloat, attrInt, attrInts, attrString, tensorToFloat32 } from '../onnx.js';
import {
  type AdaroundLayerSpec,
  type AdaroundOptions,
  ADAROUND_DEFAULTS,
  adaroundLayer,
  layerWeightParams,
  type RoundedWeights,
} from './adaround.js';
import { collectGarbage, initializerMap } from './graph.js';
import { createProbeSession, describeLayers, forEachQuantized, type LayerIoContext, type LayerTensors } from './layer-io.js';
import type { WeightScheme } from './numeric.js';
import { type EmitOptions, emitQdq, type QdqPlan } from './qdq.js';
import type { Range } from './calibrate.js';

export interface AdaroundLayerReport {
  node: string;
  /** output MSE per element on the layer's pool with round-to-nearest and with the returned rounding */
  initialMse: number;
  finalMse: number;
  /** weights rounded the other way than nearest */
  changed: number;
  weights: number;
  /** time in adaroundLayer (the optimization); the rest of durationMs is fetching inputs and targets */
  optimizationMs: number;
}

export interface AdaroundReport {
  /** layers AdaRounded */
  layers: number;
  /** optimization steps per layer */
  iterations: number;
  /** calibration images the layers were reconstructed on */
  images: number;
  /** probe sessions built (one per generation) */
  passes: number;
  durationMs: number;
  /** the process's peak resident set (bytes) when the pass ended */
  peakMemory: number;
  perLayer: AdaroundLayerReport[];
}

export interface AdaroundPassOptions {
  plan: QdqPlan;
  ranges: Map<string, Range>;
  emitOptions: EmitOptions;
  /** a session of the float (plan) model exposing every layer's pre-activation output */
  floatSession: Pick<ort.InferenceSession, 'run'>;
  inputs: Float32Array[];
  inputName: string;
  inputDims: number[];
  /** adaroundLayer's options (iterations etc.) */
  layerOptions?: AdaroundOptions;
  /** progress bar on stderr when it is a terminal (else a debug line per layer) */
  progress?: boolean;
  logger?: Logger;
}

export interface AdaroundPassResult {
  roundedWeights: Map<string, RoundedWeights>;
  report: AdaroundReport;
}

const DEFAULT_WEIGHTS: WeightScheme = { type: 'int8', symmetric: true, perChannel: true };

/** What adaroundLayer needs of a plan node: its float weights (Gemm alpha folded), bias and geometry. */
function layerProblem(
  plan: QdqPlan,
  layer: LayerTensors,
  inputDims: readonly number[],
): { spec: AdaroundLayerSpec; weightName: string; weights: Float32Array; dims: number[]; axis: number; bias?: Float32Array } {
  const node = plan.model.graph!.node![layer.planIndex]!;
  const inits = initializerMap(plan.model.graph!);
  const weightName = node.input![1]!;
  const w = inits.get(weightName)!;
  const dims = (w.dims ?? []).map(Number);
  let weights = tensorToFloat32(w);
  let bias = node.input?.[2] ? tensorToFloat32(inits.get(node.input[2])!) : undefined;
  if (node.opType === 'Gemm') {
    if (attrInt(node, 'transA', 0)) throw new Error(`${layer.node}: Gemm with transA is not supported by AdaRound`);
    // As qdq.ts emits it: alpha folded into the weights, beta into the bias.
    const alpha = attrFloat(node, 'alpha', 1);
    const beta = attrFloat(node, 'beta', 1);
    if (alpha !== 1) weights = weights.map((v) => v * alpha);
    if (bias && beta !== 1) bias = bias.map((v) => v * beta);
    const transB = attrInt(node, 'transB', 0) === 1;
    return { spec: { op: 'Gemm', transB }, weightName, weights, dims, axis: transB ? 0 : 1, ...(bias ? { bias } : {}) };
  }
  if (attrString(node, 'auto_pad', 'NOTSET') !== 'NOTSET')
    throw new Error(`${layer.node}: Conv with auto_pad is not supported by AdaRound`);
  if (inputDims.length !== 4) throw new Error(`${layer.node}: Conv input must be 4-D, got [${inputDims.join(',')}]`);
  const pads = attrInts(node, 'pads', [0, 0, 0, 0]);
  const strides = attrInts(node, 'strides', [1, 1]);
  const dilations = attrInts(node, 'dilations', [1, 1]);
  return {
    spec: {
      op: 'Conv',
      inputShape: [inputDims[1]!, inputDims[2]!, inputDims[3]!],
      group: attrInt(node, 'group', 1),
      strides: [strides[0]!, strides[1]!],
      // ONNX pads are [top, left, bottom, right] for 2-D
      pads: [pads[0]!, pads[1]!, pads[2]!, pads[3]!],
      dilations: [dilations[0]!, dilations[1]!],
    },
    weightName,
    weights,
    dims,
    axis: 0,
    ...(bias ? { bias } : {}),
  };
}

/**
 * Each of `these` layers' inputs in the probe's network and the float network's outputs of it (after
 * a folded Relu), handed to `visit` one layer at a time; a quantized input shared by layers is
 * fetched once and dropped after its last reader. `afterProbe` runs once the probe is no longer
 * needed (to release it before the optimization).
 */
async function forEachLayerData(
  ctx: LayerIoContext,
  these: LayerTensors[],
  inputs: Float32Array[],
  relu: (l: LayerTensors) => boolean,
  visit: (l: LayerTensors, samples: ort.Tensor[], targets: Float32Array[]) => Promise<void>,
  afterProbe?: () => Promise<void>,
): Promise<void> {
  const quantized = new Map<string, ort.Tensor[]>(these.map((l) => [l.quantInput, []]));
  const readers = new Map<string, number>();
  for (const l of these) readers.set(l.quantInput, (readers.get(l.quantInput) ?? 0) + 1);
  // One probe run per image for all of them.
  await forEachQuantized(ctx, these, inputs, ['quantInput'], (l, t, k) => {
    const list = quantized.get(l.quantInput)!;
    if (list.length > k) return;
    const x = t.quantInput!;
    list.push(new ort.Tensor('float32', Float32Array.from(x.data as Float32Array), x.dims));
  });
  await afterProbe?.();
  // The float outputs of all of them in one float run per image (one run per layer and image cost
  // Inception V2 about as much as the optimization at 200 steps); each layer's go after its visit.
  const targets = new Map(these.map((l) => [l, [] as Float32Array[]]));
  const fetches = [...new Set(these.map((l) => l.floatOutput))];
  for (const input of inputs) {
    let out: ort.InferenceSession.OnnxValueMapType | undefined = await ctx.float.run(
      { [ctx.inputName]: new ort.Tensor('float32', input, ctx.inputDims) },
      fetches,
    );
    for (const l of these) {
      const y = Float32Array.from(out[l.floatOutput]!.data as Float32Array);
      if (relu(l)) for (let i = 0; i < y.length; i++) if (y[i]! < 0) y[i] = 0;
      targets.get(l)!.push(y);
    }
    for (const v of Object.values(out)) (v as ort.Tensor).dispose?.();
    out = undefined;
  }
  for (const l of these) {
    await visit(l, quantized.get(l.quantInput)!, targets.get(l)!);
    targets.delete(l);
    const left = readers.get(l.quantInput)! - 1;
    readers.set(l.quantInput, left);
    if (left === 0) quantized.delete(l.quantInput);
    collectGarbage();
  }
}

/** Sequential AdaRound of the quantized Conv/Gemm layers of the plan (see the file comment). */
export async function adaroundPass(opts: AdaroundPassOptions): Promise<AdaroundPassResult> {
  const started = performance.now();
  const { plan, ranges, emitOptions, inputs, inputName, inputDims } = opts;
  if (inputs.length === 0) throw new Error('AdaRound needs at least one calibration input');
  const roundedWeights = new Map<string, RoundedWeights>();
  const perLayer: AdaroundLayerReport[] = [];
  let emitted = emitQdq(plan, ranges, emitOptions);
  let emittedWith = 0; // rounded layers in `emitted`
  let layers = describeLayers(plan, emitted.layers);
  const generations = Math.max(0, ...layers.map((l) => l.generation));
  let passes = 0;
  const relu = (l: LayerTensors): boolean => {
    const out = plan.model.graph!.node![l.planIndex]!.output![0]!;
    return plan.reluFolded.get(out) === Infinity; // a Clip's upper clamp is not modelled: reconstruct before it
  };
  const context = (probe: ort.InferenceSession): LayerIoContext => ({
    probe,
    float: opts.floatSession,
    layers,
    corrections: new Map(),
    inputName,
    inputDims,
  });
  /** adaroundLayer's input for layer `l` of the current `emitted`, with the scales qdq.ts will compute. */
  const layerInput = (l: LayerTensors, samples: ort.Tensor[], scaleOf: Map<string, number>) => {
    const problem = layerProblem(plan, l, samples[0]!.dims.map(Number));
    const node = plan.model.graph!.node![l.planIndex]!;
    const scheme = (node.opType === 'Gemm' ? emitOptions.gemmWeights : undefined) ?? emitOptions.weights ?? DEFAULT_WEIGHTS;
    const inputScale = scaleOf.get(node.input![0]!);
    if (inputScale === undefined) throw new Error(`internal: input of ${l.node} has no scale`);
    // useRoundedWeights checks them again when emitting
    const { scales, zeroPoints } = layerWeightParams(problem.weights, problem.dims, problem.axis, scheme, {
      ...(problem.bias ? { bias: problem.bias } : {}),
      inputScale,
      ...(emitOptions.minRealRange !== undefined ? { minRealRange: emitOptions.minRealRange } : {}),
    });
    return {
      weightName: problem.weightName,
      input: {
        layer: problem.spec,
        weights: problem.weights,
        weightDims: problem.dims,
        ...(problem.bias ? { bias: problem.bias } : {}),
        scheme,
        scales,
        zeroPoints,
        inputs: samples.map((x) => x.data as Float32Array),
        activation: relu(l) ? ('relu' as const) : ('none' as const),
      },
    };
  };

  const bar =
    opts.progress && process.stderr.isTTY
      ? new cliProgress.SingleBar(
          { format: 'AdaRound [{bar}] {value}/{total} layers {node}', stream: process.stderr, hideCursor: true },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
  bar?.start(layers.length, 0, { node: '' });
  try {
    for (let g = 1; g <= generations; g++) {
      if (roundedWeights.size > emittedWith) {
        // Emitted again with every earlier generation's rounding, so this generation's inputs carry it.
        emitted = emitQdq(plan, ranges, { ...emitOptions, roundedWeights });
        emittedWith = roundedWeights.size;
        layers = describeLayers(plan, emitted.layers);
      }
      const these = layers.filter((l) => l.generation === g);
      if (these.length === 0) continue;
      const scaleOf = new Map(emitted.tensors.map((t) => [t.tensor, t.scale]));
      const probe = await createProbeSession(emitted.model, layers);
      passes++;
      let released = false;
      const release = async (): Promise<void> => {
        if (released) return;
        released = true;
        await probe.release();
      };
      try {
        await forEachLayerData(
          context(probe),
          these,
          inputs,
          relu,
          async (l, samples, targets) => {
            const { weightName, input } = layerInput(l, samples, scaleOf);
            const result = await adaroundLayer({ ...input, targets, ...(opts.layerOptions ? { options: opts.layerOptions } : {}) });
            roundedWeights.set(weightName, { data: result.data, scales: input.scales, zeroPoints: input.zeroPoints });
            const entry: AdaroundLayerReport = {
              node: l.node,
              initialMse: result.stats.initialMse,
              finalMse: result.stats.finalMse,
              changed: result.stats.changed,
              weights: result.stats.weights,
              optimizationMs: Math.round(result.stats.timeMs),
            };
            perLayer.push(entry);
            bar?.update(perLayer.length, { node: l.node });
            if (!bar) opts.logger?.debug({ ...entry, done: perLayer.length, of: layers.length }, 'AdaRound layer');
          },
          release,
        );
      } finally {
        await release();
      }
    }
  } finally {
    bar?.stop();
  }
  const report: AdaroundReport = {
    layers: perLayer.length,
    iterations: opts.layerOptions?.iterations ?? ADAROUND_DEFAULTS.iterations,
    images: inputs.length,
    passes,
    durationMs: Math.round(performance.now() - started),
    peakMemory: process.resourceUsage().maxRSS * 1024,
    perLayer,
  };
  opts.logger?.info({ layers: report.layers, iterations: report.iterations, durationMs: report.durationMs }, 'AdaRound done');
  return { roundedWeights, report };
}
