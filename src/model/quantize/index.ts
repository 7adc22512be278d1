/**
 * Static INT8 quantization in QDQ format (the part of onnxruntime.quantization that exists only in
 * Python): prepare (exact rewrites) → calibrate (ranges) → emit QDQ → check per-layer SQNR.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import * as ort from 'onnxruntime-node';
import { findManifestForModel, writeManifestBeside, type ModelManifest } from '../manifest.js';
import { loadModel, type onnx, opsetVersion, saveModel } from '../onnx.js';
import { listImageFiles } from '../../util/index.js';
import { createPreprocessor } from '../../vision/index.js';
import {
  CALIBRATION_METHOD_NAMES,
  calibrateSession,
  createSession,
  probeTensors,
  withExtraOutputs,
  type CalibrationMethod,
  type CalibrationSession,
  type Range,
} from './calibrate.js';
import { quantRange, SqnrAccumulator, type ActivationType } from './numeric.js';
import { collectGarbage } from './graph.js';
import { measureBiasCorrections, writeBiasCorrections, type BiasCorrectionResult } from './bias-correction.js';
import { describeLayers } from './layer-io.js';
import { adaroundPass, type AdaroundReport } from './adaround-pass.js';
import { compareHeldOut, endToEndTensor, type FetchSession, type HeldOutReport } from './held-out.js';
import {
  floatNodeFacts,
  nameUnnamedNodes,
  nodesForFloatActivation,
  parameterGroups,
  rangesForReplan,
  searchMixedPrecision,
  type MixedPrecisionOptions,
  type MixedPrecisionReport,
} from './mixed-precision.js';
import { poolsToDepthwise, prepareModel, TARGET_OPSET, type CountMap, type TensorInfo } from './prepare.js';
import { emitQdq, planQdq, type FloatNode, type QdqPlan, type TensorQuant } from './qdq.js';
import { DEFAULT_TARGET, resolveTarget, type QdqSettings, type TargetName, type TargetOverrides } from './targets.js';

export type { ActivationType, WeightScheme, WeightType } from './numeric.js';
export type { CalibrationMethod } from './calibrate.js';
export type { HeldOutReport } from './held-out.js';
export type { MixedPrecisionOptions, MixedPrecisionReport, MixedPrecisionStep } from './mixed-precision.js';
export { HOLD_OUT_EVERY, HOLD_OUT_MIN_IMAGES, holdOutEvery } from './split.js';
export { UnsupportedModelError } from './prepare.js';
export {
  DEFAULT_TARGET,
  TARGET_ALIASES,
  TARGET_NAMES,
  TargetOptionError,
  canonicalTarget,
  describeWeights,
  resolveTarget,
  targetHelpLines,
  type QdqSettings,
  type TargetName,
  type TargetOverrides,
} from './targets.js';

/** Turns an encoded image into the model's input tensor values. */
export type Preprocess = (image: Buffer) => Promise<Float32Array>;

/** `target` and the overrides of its settings (TargetOverrides), and how to calibrate. */
export interface QuantizeOptions extends TargetOverrides {
  input: string;
  output: string;
  calibration: {
    /** image files (preprocessed with `preprocess`, or the input manifest's spec) or ready tensors */
    images: string[] | AsyncIterable<Float32Array>;
    preprocess?: Preprocess;
  };
  method: CalibrationMethod;
  /**
   * Held-out inputs for the end-to-end figure (report.heldOut): never calibrated on. Image files
   * (preprocessed like the calibration images) or ready tensors. None: no end-to-end figure.
   */
  evaluation?: { images: string[] | AsyncIterable<Float32Array> };
  /** percentile method only; default 99.999 */
  percentile?: number;
  /**
   * Sequential empirical bias correction (bias-correction.ts) on the first `images` calibration
   * inputs (default 16), kept in memory for its passes.
   */
  biasCorrection?: boolean | { images?: number };
  /**
   * Sequential AdaRound (adaround-pass.ts) of every Conv/Gemm on the first `images` calibration
   * inputs (default 16), `iterations` steps per layer (default 2000); before bias correction when
   * both are asked. Slow: minutes per layer on big layers.
   */
  adaround?: boolean | { iterations?: number; images?: number };
  /**
   * The execution provider the model is shaped for (default cpu): sets every option below that is
   * left undefined. A combination the target cannot run throws TargetOptionError.
   */
  target?: TargetName | 'cpu-x86';
  /** node names (or their first output names) to keep float */
  exclude?: string[];
  /** calibrate on at most this many images */
  maxImages?: number;
  /** how many layers to list in worstLayers (default 10) */
  worstLayers?: number;
  /** skip the avg-pool rewrites, the swap with a 1×1 conv and the depthwise conv (for measuring them) */
  poolRewrite?: boolean;
  /** Concat inputs reuse the Concat's scale/zero point so QLinearConcat copies bytes (default true) */
  shareConcatParams?: boolean;
  logger?: Logger;
  /** progress bar on stderr when it is a terminal */
  progress?: boolean;
  /**
   * Accuracy-driven mixed precision (mixed-precision.ts): when the all-INT8 logits SQNR (held-out
   * inputs, else calibration inputs) is below this, activations are kept float, fewest first, until
   * it is reached; the written model is the best combination found. With biasCorrection or adaround, every
   * candidate keeps their corrections and rounding on the layers it still quantizes.
   */
  targetSqnrDb?: number;
  /** bounds and timing options of the mixed-precision search */
  mixedPrecision?: Omit<MixedPrecisionOptions, 'targetSqnrDb'>;
}

export interface LayerSqnr {
  tensor: string;
  /** node that produces the tensor in the quantized model */
  node: string;
  opType: string;
  sqnrDb: number;
}

export interface QuantizeReport {
  input: string;
  output: string;
  manifest?: string;
  /** the provider the model is shaped for */
  target: TargetName;
  method: CalibrationMethod;
  percentile?: number;
  activationType: ActivationType;
  /** every setting the target and the options resolved to */
  settings: QdqSettings;
  calibrationImages: number;
  /** unreadable images, calibration and held-out alike (each also a warning naming which) */
  skippedImages: { image: string; error: string }[];
  /** preparation rewrites, e.g. "57 BatchNormalization folded into Conv" */
  rewrites: string[];
  foldedRelus: number;
  /** activation tensors: calibrated range and the scale/zero point used */
  tensors: TensorQuant[];
  /** weights whose per-channel scales were raised so the int32 bias fits */
  biasAdjusted: { node: string; channels: number[] }[];
  /** lowest SQNR first: quantized vs float activation on a few calibration inputs */
  worstLayers: LayerSqnr[];
  /** end to end on the held-out inputs (options.evaluation); absent when there were none */
  heldOut?: HeldOutReport;
  /** what sequential bias correction did and cost (absent when not asked) */
  biasCorrection?: BiasCorrectionResult;
  /**
   * the mixed-precision search (absent without targetSqnrDb); worstLayers and tensors describe the
   * all-INT8 model; heldOut, floatNodes and sizeBytes the written one (heldOut: when the held-out
   * images are files, which can be read twice; mixedPrecision.allInt8HeldOut is then the all-INT8 figure)
   */
  mixedPrecision?: MixedPrecisionReport;
  /** what AdaRound did and cost (absent when not asked) */
  adaround?: AdaroundReport;
  sizeBytes: { before: number; after: number };
  floatNodes: FloatNode[];
  warnings: string[];
}

/** Image files of a calibration folder, sorted; a missing or empty folder is an error. */
export function listCalibrationImages(dir: string): Promise<string[]> {
  return listImageFiles(dir, 'calibration folder', { folderOnly: true });
}

function isAsyncIterable(x: unknown): x is AsyncIterable<Float32Array> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

/** Reads and preprocesses images one at a time; an unreadable image is skipped with a warning. */
async function* imageTensors(
  images: string[],
  preprocess: Preprocess,
  skipped: { image: string; error: string }[],
  warn: (msg: string) => void,
  what = 'calibration',
): AsyncGenerator<Float32Array> {
  for (const image of images) {
    let data: Float32Array;
    try {
      data = await preprocess(await readFile(image));
    } catch (err) {
      const error = (err as Error).message;
      skipped.push({ image, error });
      warn(`${what} image skipped: ${image}: ${error}`);
      continue;
    }
    yield data;
  }
}

/** Passes `source` through, keeping its first `max` items in `kept`. */
async function* keepFirst<T>(source: AsyncIterable<T>, max: number, kept: T[]): AsyncGenerator<T> {
  for await (const x of source) {
    if (kept.length < max) kept.push(x);
    yield x;
  }
}

async function* take<T>(source: AsyncIterable<T>, max: number): AsyncGenerator<T> {
  if (max <= 0) return;
  let n = 0;
  for await (const x of source) {
    yield x;
    if (++n >= max) return;
  }
}

/** The model's one graph input that is not an initializer. */
function singleInputName(model: onnx.IModelProto, file: string): string {
  const g = model.graph ?? {};
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const inputs = (g.input ?? []).filter((i) => !inits.has(i.name));
  if (!inputs[0]?.name) throw new Error(`${file}: model has no input`);
  if (inputs.length > 1) throw new Error(`${file}: models with more than one input are not supported`);
  return inputs[0].name;
}

function staticDims(info: TensorInfo | undefined, name: string): number[] {
  if (!info) throw new Error(`model input ${name} has no shape information`);
  // A symbolic batch dimension is calibrated with batch 1; other symbolic dims cannot be guessed.
  return info.dims.map((d, i) => {
    if (typeof d === 'number' && d > 0) return d;
    if (i === 0) return 1;
    throw new Error(`model input ${name} has a dynamic dimension ${i} (${String(d)}); quantization needs a fixed input shape`);
  });
}

export async function quantizeModel(opts: QuantizeOptions): Promise<QuantizeReport> {
  const log = opts.logger;
  if (opts.activationType !== undefined && !['uint8', 'int8', 'uint16'].includes(opts.activationType)) {
    throw new Error(`activation type must be uint8, int8 or uint16, got "${String(opts.activationType)}"`);
  }
  if (opts.weightType !== undefined && !['uint8', 'int8'].includes(opts.weightType)) {
    throw new Error(`weight type must be uint8 or int8, got "${String(opts.weightType)}"`);
  }
  const settings = resolveTarget(opts.target ?? DEFAULT_TARGET, {
    activationType: opts.activationType,
    perChannel: opts.perChannel,
    weightType: opts.weightType,
    weightSymmetric: opts.weightSymmetric,
    minRealRange: opts.minRealRange,
    quantizeSoftmax: opts.quantizeSoftmax,
    keepActivations: opts.keepActivations,
  });
  const activationType = settings.activationType;
  if (!CALIBRATION_METHOD_NAMES.includes(opts.method)) {
    throw new Error(`calibration method must be ${CALIBRATION_METHOD_NAMES.join(', ')}, got "${String(opts.method)}"`);
  }
  const percentile = opts.percentile ?? 99.999;
  if (opts.method === 'percentile' && !(percentile > 0 && percentile <= 100)) {
    throw new Error(`percentile must be in (0, 100], got ${percentile}`);
  }
  const targetSqnrDb = opts.targetSqnrDb;
  if (targetSqnrDb !== undefined) {
    if (!Number.isFinite(targetSqnrDb)) throw new Error(`target SQNR must be a number of dB, got ${String(targetSqnrDb)}`);
    const bound = opts.mixedPrecision?.maxLatencyRatio;
    if (bound !== undefined && !(bound > 0 && Number.isFinite(bound))) throw new Error(`latency bound must be a ratio > 0, got ${bound}`);
  }
  const mixedImages = targetSqnrDb !== undefined ? (opts.mixedPrecision?.images ?? 16) : 0;
  const warnings: string[] = [];
  const warn = (msg: string): void => {
    warnings.push(msg);
    log?.warn(msg);
  };

  // Memory: the float model is held once (its decoded copy, the weights as views of one buffer), and
  // once more by the ORT session that calibrates on it; every copy made for a step shares the weights.
  // The per-input activations are dropped after each input (calibrate.ts).
  let original: onnx.ModelProto | undefined = await loadModel(opts.input);
  const found = await findManifestForModel(opts.input).catch((err: Error) => {
    warn(`manifest of ${opts.input} ignored: ${err.message}`);
    return undefined;
  });

  // Calibration inputs: checked before any heavy work so a bad folder fails fast.
  const skippedImages: { image: string; error: string }[] = [];
  const maxImages = opts.maxImages ?? Infinity;
  let inputs: AsyncIterable<Float32Array>;
  let total: number | undefined;
  let preprocess = opts.calibration.preprocess;
  const preprocessor = (what: string): Preprocess => {
    if (preprocess) return preprocess;
    if (!found) throw new Error(`no manifest for ${opts.input}: cannot preprocess ${what} images (pass a preprocess function)`);
    const pre = createPreprocessor(found.manifest.input);
    preprocess = async (buf) => (await pre(buf)).tensor.data;
    return preprocess;
  };
  if (isAsyncIterable(opts.calibration.images)) {
    inputs = opts.calibration.images;
  } else {
    const images = opts.calibration.images;
    if (!Array.isArray(images) || images.length === 0) throw new Error('no calibration images given');
    const list = images.slice(0, Number.isFinite(maxImages) ? maxImages : undefined);
    total = list.length;
    inputs = imageTensors(list, preprocessor('calibration'), skippedImages, warn);
  }
  if (Number.isFinite(maxImages)) inputs = take(inputs, maxImages);
  // Held-out images are read after calibration, one at a time; an unreadable one is skipped like a calibration image.
  const evaluationImages = opts.evaluation?.images;
  const evaluationInputs = (): AsyncIterable<Float32Array> | undefined =>
    evaluationImages === undefined
      ? undefined
      : isAsyncIterable(evaluationImages)
        ? evaluationImages
        : imageTensors(evaluationImages, preprocessor('held-out'), skippedImages, warn, 'held-out');
  if (Array.isArray(evaluationImages) && evaluationImages.length > 0) preprocessor('held-out');

  // 1. Prepare.
  const fromOpset = opsetVersion(original) ?? 0;
  const originalShapes = fromOpset < TARGET_OPSET ? await probeTensors(original) : undefined;
  let { model: prepared, rewrites } = prepareModel(original, { shapes: originalShapes, poolRewrite: opts.poolRewrite }) as {
    model: onnx.ModelProto | undefined;
    rewrites: string[];
  };
  original = undefined; // prepareModel worked on a copy: the file's bytes can go
  collectGarbage();
  const types = await probeTensors(prepared!);
  // ORT's CPU kernels only: an NPU runs AveragePool natively, and its depthwise conv and Mul are not measured.
  let countMaps: CountMap[] = [];
  if (opts.poolRewrite !== false && (settings.target === 'cpu' || settings.target === 'cpu-arm')) {
    const depthwise = poolsToDepthwise(prepared!.graph!, types);
    countMaps = depthwise.countMaps;
    if (depthwise.pools > 0) {
      const maps = countMaps.length > 0 ? ` (${countMaps.length} times a count map: padding left out of the average)` : '';
      rewrites.push(`${depthwise.pools} AveragePool → depthwise Conv${maps}`);
    }
  }
  log?.info({ rewrites }, 'model prepared');
  // Mixed precision names the nodes to keep float after Relu folding renamed their outputs.
  if (targetSqnrDb !== undefined) nameUnnamedNodes(prepared!);

  // 2. Plan: which nodes and tensors to quantize.
  let plan: QdqPlan | undefined = planQdq(prepared!, types, {
    exclude: opts.exclude,
    activationType,
    shareConcatParams: opts.shareConcatParams,
    quantizeSoftmax: settings.quantizeSoftmax,
    keepActivations: settings.keepActivations,
  });
  for (const w of plan.warnings) warn(w);
  const inputName = singleInputName(prepared!, opts.input);
  const inputDims = staticDims(types.get(inputName), inputName);
  const toCalibrate = [...plan.own].filter((t) => !plan!.fixedRanges.has(t));
  // What the report needs of the plan, so the plan (and the float weights it shares) can go early.
  let { floatNodes } = plan;
  const { foldedRelus } = plan;
  // Mixed precision re-plans with exclusions: it keeps the prepared model (its weights are shared
  // with the plan's) and the first plan, which says which nodes touch each activation.
  const mixedSource =
    targetSqnrDb !== undefined ? { prepared: prepared!, plan, shared: new Map(plan.shared), fixed: plan.fixedRanges } : undefined;
  const producersOut = new Map<string, { name: string; opType: string }>();
  for (const n of plan.model.graph?.node ?? [])
    for (const o of n.output ?? []) producersOut.set(o, { name: n.name ?? '', opType: n.opType ?? '' });

  // 3. Calibrate. The session exposes every activation that gets Q/DQ (the calibrated ones and those
  // sharing a range): it is the float reference of the per-layer SQNR afterwards, so the float model
  // is never loaded into ORT twice.
  const activations = [...plan.own, ...plan.shared.keys()];
  const logits = endToEndTensor(prepared!);
  const biasCorrectionImages =
    opts.biasCorrection === true ? 16 : typeof opts.biasCorrection === 'object' ? (opts.biasCorrection.images ?? 16) : 0;
  const adaroundOptions = opts.adaround === true ? {} : opts.adaround || undefined;
  const adaroundImages = adaroundOptions ? (adaroundOptions.images ?? 16) : 0;
  // Bias correction and AdaRound compare each layer's pre-activation output (before a folded Relu) with the float one.
  const preActivations = biasCorrectionImages > 0 || adaroundImages > 0 ? preActivationOutputs(plan) : [];
  const floatSession = await createSession(withExtraOutputs(prepared!, [...activations, logits, ...preActivations]));
  collectGarbage(); // the encoded model handed to ORT
  let calibration: Awaited<ReturnType<typeof calibrateSession>>;
  let qdq: Pick<ReturnType<typeof emitQdq>, 'tensors' | 'biasAdjusted'>;
  let worstLayers: Awaited<ReturnType<typeof layerSqnr>>;
  let heldOut: HeldOutReport | undefined;
  let biasCorrection: BiasCorrectionResult | undefined;
  let mixedPrecision: MixedPrecisionReport | undefined;
  let floatReleased = false;
  let adaround: AdaroundReport | undefined;
  try {
    const bar =
      opts.progress && process.stderr.isTTY && total !== undefined
        ? new cliProgress.SingleBar(
            { format: 'calibrating [{bar}] {value}/{total} images', stream: process.stderr, hideCursor: true },
            cliProgress.Presets.shades_classic,
          )
        : undefined;
    bar?.start(total ?? 0, 0); // tensors from an iterable have no known count: no bar, log lines instead
    try {
      calibration = await calibrateSession(floatSession, toCalibrate, inputs, {
        method: opts.method,
        percentile,
        levels: quantRange(activationType).qmax - quantRange(activationType).qmin + 1,
        quantizer: { type: activationType, ...(settings.minRealRange !== undefined ? { minRealRange: settings.minRealRange } : {}) },
        inputName,
        inputDims,
        keepInputs: Math.max(4, biasCorrectionImages, mixedImages, adaroundImages),
        onInput: (n) => {
          bar?.update(n);
          if (!bar && n % 50 === 0) log?.info({ images: n }, 'calibrating');
        },
      });
    } catch (err) {
      if (/no calibration inputs/.test((err as Error).message) && skippedImages.length > 0) {
        throw new Error(
          `none of the ${skippedImages.length} calibration images could be read (first: ${skippedImages[0]!.image}: ${skippedImages[0]!.error})`,
        );
      }
      throw err;
    } finally {
      bar?.stop();
    }
    log?.info({ images: calibration.inputs, tensors: toCalibrate.length, method: opts.method }, 'calibrated');

    const bytesOf = (t: string): number | undefined => {
      const info = types.get(t);
      if (info?.type !== 'float32') return undefined;
      // a symbolic batch dimension runs as 1; other symbolic dims: unknown
      const dims = info.dims.map((d, k) => (typeof d === 'number' && d > 0 ? d : k === 0 ? 1 : Number.NaN));
      const n = dims.reduce((a, b) => a * b, 4);
      return Number.isFinite(n) ? n : undefined;
    };
    // 4. Emit QDQ (with bias correction: measure on it, then correct its int32 biases) and write.
    const emitOptions = {
      activationType,
      countMaps,
      weights: settings.weights,
      gemmWeights: settings.gemmWeights,
      ...(settings.minRealRange !== undefined ? { minRealRange: settings.minRealRange } : {}),
    };
    // AdaRound first: bias correction then measures the network with its rounding, as in the literature.
    const rounding = adaroundOptions
      ? await adaroundPass({
          plan,
          ranges: calibration.ranges,
          emitOptions,
          floatSession,
          inputs: calibration.kept.slice(0, adaroundImages),
          inputName,
          inputDims,
          ...(adaroundOptions.iterations !== undefined ? { layerOptions: { iterations: adaroundOptions.iterations } } : {}),
          progress: opts.progress,
          logger: log,
        })
      : undefined;
    adaround = rounding?.report;
    const roundedWeights = rounding?.roundedWeights;
    const emitted = emitQdq(plan, calibration.ranges, roundedWeights ? { ...emitOptions, roundedWeights } : emitOptions);
    // Bias correction names each layer's tensors from the plan; it then works on the QDQ model alone.
    const layers = biasCorrectionImages > 0 ? describeLayers(plan, emitted.layers) : undefined;
    const biasCorrectionsByNode = new Map<string, Float32Array>();
    // The float weights are in the session now: their JS copy goes before the QDQ model is encoded.
    plan = undefined;
    prepared = undefined;
    collectGarbage();
    if (layers) {
      const t0 = performance.now();
      const measured = await measureBiasCorrections({
        qdqModel: emitted.model,
        layers,
        floatSession,
        inputs: calibration.kept.slice(0, biasCorrectionImages),
        inputName,
        inputDims,
        onGeneration: (g, of) => log?.debug({ generation: g, of }, 'bias correction'),
      });
      const { saturated } = writeBiasCorrections(emitted.model, measured.corrections);
      // Mixed precision re-emits candidates: they get the same corrections, by layer name.
      for (const [l, c] of measured.corrections) biasCorrectionsByNode.set(l.node, c);
      if (saturated > 0) warn(`bias correction: ${saturated} corrected bias value(s) clamped to the int32 range`);
      biasCorrection = { ...measured.result, saturated, durationMs: Math.round(performance.now() - t0) };
      log?.info(biasCorrection, 'bias corrected');
      collectGarbage();
    }
    for (const b of emitted.biasAdjusted) {
      warn(`${b.node}: weight scale raised on ${b.channels.length} channel(s) so the int32 bias fits`);
    }
    await saveModel(emitted.model, opts.output);
    collectGarbage(); // the encoded QDQ model
    qdq = { tensors: emitted.tensors, biasAdjusted: emitted.biasAdjusted };

    // 5. Per-layer SQNR on the inputs kept during calibration.
    // 5. Per-layer SQNR on the inputs kept during calibration.
    worstLayers = await layerSqnr(
      floatSession,
      emitted.model,
      emitted.dequantized,
      calibration.kept.slice(0, 4),
      inputName,
      inputDims,
      bytesOf,
    );

    /** The held-out figure of a QDQ model, fused as the daemon runs it, against the float session or recorded float logits. */
    const heldOutOf = async (
      model: onnx.IModelProto,
      quantLogits: string,
      float: FetchSession | readonly Float32Array[],
      inputs: AsyncIterable<Float32Array>,
      record?: Float32Array[],
    ): Promise<HeldOutReport | undefined> => {
      const session = await createSession(withExtraOutputs(model, [quantLogits]), {
        graphOptimizationLevel: 'all',
        executionProviders: ['cpu'],
        intraOpNumThreads: 2,
        enableCpuMemArena: false,
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
      try {
        return await compareHeldOut(float, session, { float: logits, quant: quantLogits }, inputs, inputName, inputDims, record);
      } finally {
        await session.release();
      }
    };

    // 6. End to end on held-out inputs, the QDQ model optimized as the daemon runs it (fused int8 kernels).
    // Mixed precision measures every step on the first held-out inputs: kept as they stream by.
    const heldOutKept: Float32Array[] = [];
    // ... and when it writes a model that is not all INT8, that model is compared on the same held-out
    // images again, against the float logits recorded now (the float session is gone by then). Image
    // files can be read twice; an iterable of tensors cannot.
    const heldOutFloat = mixedImages > 0 && Array.isArray(evaluationImages) ? ([] as Float32Array[]) : undefined;
    const fromEvaluation = evaluationInputs();
    const heldOutInputs = fromEvaluation && mixedImages > 0 ? keepFirst(fromEvaluation, mixedImages, heldOutKept) : fromEvaluation;
    if (heldOutInputs) {
      heldOut = await heldOutOf(emitted.model, emitted.dequantized.get(logits) ?? logits, floatSession, heldOutInputs, heldOutFloat);
      if (heldOut) log?.info(heldOut, 'held-out comparison');
    }

    // 7. Mixed precision: the fewest activations kept float that reach the target.
    if (mixedSource && targetSqnrDb !== undefined) {
      const source = heldOutKept.length > 0 ? 'held-out' : 'calibration';
      const measureOn = source === 'held-out' ? heldOutKept : calibration.kept.slice(0, mixedImages);
      const floatLogits: Float32Array[] = [];
      for (const data of measureOn) {
        const out = (await floatSession.run({ [inputName]: new ort.Tensor('float32', data, inputDims) }, [logits]))[logits]!;
        floatLogits.push((out.data as Float32Array).slice());
        out.dispose?.();
      }
      // The float reference is in floatLogits now: the calibration session's copy of the weights goes
      // before the search opens its probe and timing sessions.
      floatReleased = true;
      await floatSession.release();
      collectGarbage();
      const groups = parameterGroups(emitted.tensors);
      const replanRanges = rangesForReplan(calibration.ranges, mixedSource.shared, mixedSource.fixed);
      const emitWith = (exclude: string[]) => {
        const p = planQdq(mixedSource.prepared, types, {
          exclude: [...(opts.exclude ?? []), ...exclude],
          activationType,
          shareConcatParams: opts.shareConcatParams,
          quantizeSoftmax: settings.quantizeSoftmax,
          keepActivations: settings.keepActivations,
        });
        // A candidate keeps the all-INT8 model's AdaRound rounding and bias corrections on the layers it
        // still quantizes: their weight and input scales are the same, as the ranges are.
        const e = emitQdq(p, replanRanges, roundedWeights ? { ...emitOptions, roundedWeights } : emitOptions);
        if (biasCorrectionsByNode.size > 0) {
          const corrected = describeLayers(p, e.layers).filter((l) => biasCorrectionsByNode.has(l.node));
          writeBiasCorrections(e.model, new Map(corrected.map((l) => [l, biasCorrectionsByNode.get(l.node)!])));
        }
        const requested = new Set(opts.exclude ?? []);
        const excluded = p.floatNodes.filter((n) => n.reason === 'excluded by request' && !requested.has(n.name)).map((n) => n.name);
        return { model: e.model, logits: e.dequantized.get(logits) ?? logits, floatNodes: p.floatNodes, excluded };
      };
      const realize = (root: string): string[] => [
        ...new Set((groups.get(root) ?? [root]).flatMap((t) => nodesForFloatActivation(mixedSource.plan, t))),
      ];
      mixedPrecision = await searchMixedPrecision({
        options: { ...opts.mixedPrecision, targetSqnrDb },
        inputName,
        inputDims,
        inputs: measureOn,
        source,
        floatLogits,
        floatModel: opts.input,
        int8: {
          model: emitted.model,
          dequantized: emitted.dequantized,
          groups,
          clamps: mixedSource.plan.reluFolded,
          logits: emitted.dequantized.get(logits) ?? logits,
        },
        logits,
        realize,
        ...floatNodeFacts(mixedSource.plan, types, realize),
        emit: emitWith,
        log: (msg, data) => log?.info(data, msg),
      });
      if (mixedPrecision.kept.length > 0) {
        const chosen = emitWith(mixedPrecision.kept);
        await saveModel(chosen.model, opts.output);
        floatNodes = chosen.floatNodes;
        if (heldOut && heldOutFloat && Array.isArray(evaluationImages)) {
          // read again without a second warning for an unreadable image
          const again = imageTensors(evaluationImages, preprocessor('held-out'), [], () => {}, 'held-out');
          const written = await heldOutOf(chosen.model, chosen.logits, heldOutFloat, again);
          if (written) {
            mixedPrecision.allInt8HeldOut = heldOut;
            heldOut = written;
            log?.info(heldOut, 'held-out comparison of the mixed-precision model');
          }
        } else if (heldOut) {
          warn("mixed precision: heldOut is the all-INT8 model's figure (held-out tensors cannot be read twice)");
        }
      }
      collectGarbage();
    }
  } finally {
    if (!floatReleased) await floatSession.release();
  }
  const before = (await stat(opts.input)).size;
  const after = (await stat(opts.output)).size;

  let manifestPath: string | undefined;
  if (found) {
    const forTarget = settings.target === DEFAULT_TARGET ? '' : ` for ${settings.target}`;
    // A reader (or a person) can tell an NPU-shaped model from a CPU one by `quantization`.
    const m: ModelManifest = {
      ...found.manifest,
      precision: 'int8',
      notes: [
        found.manifest.notes,
        `INT8 QDQ (${opts.method} calibration, ${activationType} activations)${forTarget} of ${path.basename(opts.input)}.`,
        // A reader of the manifest alone should know the model is not all INT8.
        mixedPrecision && mixedPrecision.kept.length > 0
          ? `Mixed precision: ${mixedPrecision.kept.length} node(s) kept float for a ${mixedPrecision.targetSqnrDb} dB logits SQNR target (${mixedPrecision.reached ? 'reached' : 'not reached'}).`
          : '',
      ]
        .filter(Boolean)
        .join(' '),
      quantization: {
        ...settings,
        method: opts.method,
        ...(opts.method === 'percentile' ? { percentile } : {}),
      },
    };
    delete m.source; // the quantized file is not the downloaded one
    // Labels are relative to the input's manifest; the helper re-anchors them for the output.
    manifestPath = await writeManifestBeside(opts.output, m, path.dirname(found.manifestPath));
  } else {
    warn(`no manifest found for ${opts.input}: none written beside ${opts.output}`);
  }

  return {
    input: opts.input,
    output: opts.output,
    ...(manifestPath ? { manifest: manifestPath } : {}),
    target: settings.target,
    method: opts.method,
    ...(opts.method === 'percentile' ? { percentile } : {}),
    activationType,
    settings,
    calibrationImages: calibration.inputs,
    skippedImages,
    rewrites,
    foldedRelus,
    tensors: qdq.tensors,
    biasAdjusted: qdq.biasAdjusted,
    worstLayers: worstLayers.slice(0, opts.worstLayers ?? 10).map((l) => {
      const p = producersOut.get(l.tensor);
      return { ...l, node: p?.name || l.tensor, opType: p?.opType ?? 'input' };
    }),
    ...(heldOut ? { heldOut } : {}),
    ...(biasCorrection ? { biasCorrection } : {}),
    ...(mixedPrecision ? { mixedPrecision } : {}),
    ...(adaround ? { adaround } : {}),
    sizeBytes: { before, after },
    floatNodes,
    warnings,
  };
}

/** Pre-activation outputs (before a folded Relu/Clip) of the plan's quantized Conv/Gemm nodes, in the prepared model. */
function preActivationOutputs(plan: QdqPlan): string[] {
  const out: string[] = [];
  for (const n of plan.model.graph?.node ?? []) {
    if (!plan.quantized.has(n) || (n.opType !== 'Conv' && n.opType !== 'Gemm')) continue;
    const o = n.output![0]!;
    out.push(plan.preActivation.get(o) ?? o);
  }
  return out;
}

/** Output channels of the plan's Conv/Gemm node at `index`, from its weight's shape. */
/** Most float activation bytes one SQNR run fetches per session (fewer, bigger runs are faster). */
const SQNR_FETCH_BYTES = 12 << 20;

/** `names` in groups of at most `budget` bytes (a tensor bigger than that alone; unknown size: alone). */
export function fetchGroups(names: string[], bytesOf: (name: string) => number | undefined, budget: number): string[][] {
  const groups: string[][] = [];
  let current: string[] = [];
  let bytes = 0;
  for (const n of names) {
    const b = bytesOf(n) ?? budget;
    if (current.length > 0 && bytes + b > budget) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(n);
    bytes += b;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

/**
 * SQNR of every dequantized activation against its float counterpart, lowest first. `floatSession`
 * (the calibration session) exposes the float activations; the QDQ model gets a session of its own.
 * The pairs are fetched in groups of about SQNR_FETCH_BYTES, float then quantized, so one image's
 * activations of every tensor, twice, are never all held at once.
 */
async function layerSqnr(
  floatSession: CalibrationSession,
  qdqModel: onnx.IModelProto,
  dequantized: Map<string, string>,
  inputs: Float32Array[],
  inputName: string,
  inputDims: number[],
  bytesOf: (tensor: string) => number | undefined,
): Promise<{ tensor: string; node: string; opType: string; sqnrDb: number }[]> {
  if (inputs.length === 0) return [];
  const pairs = [...dequantized].filter(([f]) => f !== inputName);
  const qdqSession = await createSession(
    withExtraOutputs(
      qdqModel,
      pairs.map(([, q]) => q),
    ),
  );
  const acc = new Map(pairs.map(([f]) => [f, new SqnrAccumulator()]));
  const groups = fetchGroups(
    pairs.map(([f]) => f),
    bytesOf,
    SQNR_FETCH_BYTES,
  );
  try {
    for (const data of inputs) {
      const feed = { [inputName]: new ort.Tensor('float32', data, inputDims) };
      for (const group of groups) {
        let fo: ort.InferenceSession.OnnxValueMapType | undefined = await floatSession.run(feed, group);
        let qo: ort.InferenceSession.OnnxValueMapType | undefined = await qdqSession.run(
          feed,
          group.map((f) => dequantized.get(f)!),
        );
        for (const f of group) acc.get(f)!.add(fo[f]!.data as Float32Array, qo[dequantized.get(f)!]!.data as Float32Array);
        for (const v of [...Object.values(fo), ...Object.values(qo)]) (v as ort.Tensor).dispose?.();
        fo = undefined;
        qo = undefined;
        collectGarbage();
      }
    }
  } finally {
    await qdqSession.release();
  }
  return [...acc].map(([tensor, a]) => ({ tensor, node: tensor, opType: '', sqnrDb: a.db })).sort((a, b) => a.sqnrDb - b.sqnrDb);
}

export type { Range, TensorQuant, FloatNode };
