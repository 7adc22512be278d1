// What `inceptiond model quantize` does (loaded when it runs): wiring between the CLI, the config (for
// --from-source), capture/ and the quantizer in model/.
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import sharp from 'sharp';
import { CaptureRunner, SourceExhaustedError, createSource, toSourceOptions, type Frame, type FrameSource } from '../capture/index.js';
import type { Config } from '../config/index.js';
import {
  HOLD_OUT_MIN_IMAGES,
  holdOutEvery,
  quantizeModel,
  type ActivationType,
  type CalibrationMethod,
  type QuantizeReport,
  type TargetName,
} from '../model/index.js';
import { DEFAULT_TARGET, describeWeights } from '../model/quantize/targets.js';
import { sessionOptionsFor } from '../inference/session-options.js';
import { listImageFiles, requireFile } from '../util/index.js';

export interface QuantizeCommandOptions {
  input: string;
  output: string;
  /** calibration folder (or glob); --from-source captures into it first */
  calibration: string;
  method: CalibrationMethod;
  percentile?: number;
  /** the execution provider to shape the model for (default cpu) */
  target?: TargetName | 'cpu-x86';
  /** undefined: the target's */
  activationType?: ActivationType;
  /** undefined: the target's */
  perChannel?: boolean;
  keepActivations?: boolean;
  exclude?: string[];
  maxImages?: number;
  /** held-out images (folder or glob); undefined: every 5th calibration image when there are at least 20 (split.ts) */
  evalImages?: string;
  /** sequential bias correction on this many calibration images */
  biasCorrection?: number;
  /** AdaRound every Conv/Gemm with this many steps per layer */
  adaround?: number;
  /** AdaRound: the calibration images it learns on (default 16) */
  adaroundImages?: number;
  json: boolean;
  /** capture this many frames from the configured source into `calibration` first */
  fromSource?: number;
  /** mixed precision: the logits SQNR to reach by keeping activations float */
  targetSqnrDb?: number;
  /** mixed precision: the most latency a kept step may bring, as a fraction of FP32's */
  maxLatencyRatio?: number;
  /** mixed precision: the images each step is measured on */
  searchImages?: number;
  /** mixed precision: the images each activation's gain is ranked on (the first of the search images) */
  sensitivityImages?: number;
  /** mixed precision: the most float steps tried */
  maxSteps?: number;
}

export interface CaptureResult {
  source: string;
  backend: string;
  dir: string;
  files: string[];
  /** the source ran out (files backend without loop) before `count` frames */
  exhausted: boolean;
}

/** A capture that fails this many times in a row ends --from-source (the daemon would retry forever). */
const MAX_CONSECUTIVE_CAPTURE_FAILURES = 5;

function isJpeg(data: Buffer): boolean {
  return data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff;
}

/**
 * Captures `count` frames from the config's default source into `dir` (created if missing) as
 * frame-0001.jpg, frame-0002.jpg, …, numbering on after frames already there. Frames are spaced by the
 * source's capture.intervalMs (a camera's scene changes; a files source is read back to back).
 */
export async function captureCalibrationFrames(
  config: Config,
  logger: Logger,
  dir: string,
  count: number,
  opts: { progress?: boolean } = {},
): Promise<CaptureResult> {
  const sourceConfig = config.sources[0];
  if (!sourceConfig) throw new Error('the configuration has no source to capture from');
  let source: FrameSource;
  try {
    const options = toSourceOptions(sourceConfig, config);
    source = createSource(sourceConfig.backend === 'files' ? { ...options, intervalMs: 0 } : options, logger);
  } catch (err) {
    throw new Error(`cannot capture from source "${sourceConfig.id}": ${(err as Error).message}`);
  }
  const runner = new CaptureRunner(source, {
    intervalMs: sourceConfig.backend === 'files' ? 0 : sourceConfig.intervalMs,
    retryInitialMs: sourceConfig.retryInitialMs,
    retryMaxMs: sourceConfig.retryMaxMs,
    logger,
  });
  const abort = new AbortController();
  runner.on('health', (h) => {
    if (h.state === 'failing' && h.failures >= MAX_CONSECUTIVE_CAPTURE_FAILURES) {
      abort.abort(
        new Error(
          `source "${sourceConfig.id}" (${sourceConfig.backend}) failed ${h.failures} times in a row: ${h.error ?? 'unknown error'}`,
        ),
      );
    }
  });

  await mkdir(dir, { recursive: true });
  let next = 0;
  for (const name of await readdir(dir)) {
    const m = /^frame-(\d+)\.jpg$/.exec(name);
    if (m) next = Math.max(next, Number(m[1]));
  }
  const files: string[] = [];
  let exhausted = false;
  const bar =
    opts.progress && process.stderr.isTTY
      ? new cliProgress.SingleBar(
          { format: `capturing from "${sourceConfig.id}" [{bar}] {value}/{total} frames`, stream: process.stderr, hideCursor: true },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
  try {
    try {
      await runner.start();
    } catch (err) {
      throw new Error(`cannot start source "${sourceConfig.id}": ${(err as Error).message}`);
    }
    bar?.start(count, 0);
    while (files.length < count) {
      let frame: Frame;
      try {
        frame = await runner.next(abort.signal);
      } catch (err) {
        if (err instanceof SourceExhaustedError) {
          exhausted = true;
          break;
        }
        throw err;
      }
      // Other sources may hand over PNG or WebP; the folder holds JPEGs so the names say what they are.
      const data = isJpeg(frame.data) ? frame.data : await sharp(frame.data).jpeg({ quality: 95 }).toBuffer();
      const file = path.join(dir, `frame-${String(++next).padStart(4, '0')}.jpg`);
      await writeFile(file, data);
      files.push(file);
      bar?.update(files.length);
    }
  } finally {
    bar?.stop();
    await runner.stop().catch(() => undefined);
  }
  if (files.length === 0) throw new Error(`source "${sourceConfig.id}" gave no frames`);
  return { source: sourceConfig.id, backend: sourceConfig.backend, dir, files, exhausted };
}

export async function quantizeCommand(
  config: () => Config,
  logger: Logger,
  opts: QuantizeCommandOptions,
): Promise<QuantizeReport & { captured?: CaptureResult }> {
  await requireFile(opts.input, 'model file');
  let captured: CaptureResult | undefined;
  if (opts.fromSource !== undefined) {
    captured = await captureCalibrationFrames(config(), logger, opts.calibration, opts.fromSource, { progress: !opts.json });
    if (!opts.json) {
      process.stderr.write(
        `captured ${captured.files.length} frame(s) from source "${captured.source}" (${captured.backend}) into ${captured.dir}` +
          `${captured.exhausted ? ` (the source ran out before ${opts.fromSource})` : ''}\n`,
      );
    }
  }
  const listed = await listImageFiles(opts.calibration, 'calibration folder');
  const { calibration: images, heldOut } =
    opts.evalImages !== undefined
      ? { calibration: listed, heldOut: await listImageFiles(opts.evalImages, 'held-out image folder') }
      : holdOutEvery(listed);
  await mkdir(path.dirname(path.resolve(opts.output)), { recursive: true });
  const report = await quantizeModel({
    input: opts.input,
    output: opts.output,
    calibration: { images },
    ...(heldOut.length > 0 ? { evaluation: { images: heldOut } } : {}),
    ...(opts.biasCorrection !== undefined ? { biasCorrection: { images: opts.biasCorrection } } : {}),
    ...(opts.adaround !== undefined
      ? { adaround: { iterations: opts.adaround, ...(opts.adaroundImages !== undefined ? { images: opts.adaroundImages } : {}) } }
      : {}),
    method: opts.method,
    ...(opts.percentile !== undefined ? { percentile: opts.percentile } : {}),
    ...(opts.target !== undefined ? { target: opts.target } : {}),
    ...(opts.activationType !== undefined ? { activationType: opts.activationType } : {}),
    ...(opts.perChannel !== undefined ? { perChannel: opts.perChannel } : {}),
    ...(opts.keepActivations !== undefined ? { keepActivations: opts.keepActivations } : {}),
    ...(opts.exclude?.length ? { exclude: opts.exclude } : {}),
    ...(opts.maxImages !== undefined ? { maxImages: opts.maxImages } : {}),
    ...(opts.targetSqnrDb !== undefined
      ? {
          targetSqnrDb: opts.targetSqnrDb,
          mixedPrecision: {
            sessionOptions: cpuTimingOptions(config()),
            ...(opts.maxLatencyRatio !== undefined ? { maxLatencyRatio: opts.maxLatencyRatio } : {}),
            ...(opts.searchImages !== undefined ? { images: opts.searchImages } : {}),
            ...(opts.sensitivityImages !== undefined ? { sensitivityImages: opts.sensitivityImages } : {}),
            ...(opts.maxSteps !== undefined ? { maxSteps: opts.maxSteps } : {}),
          },
        }
      : {}),
    progress: !opts.json,
  });
  const full = captured ? { ...report, captured } : report;
  process.stdout.write(opts.json ? `${JSON.stringify(full, null, 2)}\n` : formatQuantizeReport(report));
  return full;
}

/**
 * The daemon's CPU session options (threads, spinning, optimization level from the config), which the
 * mixed-precision steps are timed with: the model is shaped for the CPU target.
 */
function cpuTimingOptions(config: Config): ReturnType<typeof sessionOptionsFor> {
  return sessionOptionsFor(
    {
      modelPath: '',
      executionProviders: ['cpu'],
      threads: config.inference.threads,
      allowSpinning: config.inference.allowSpinning,
      graphOptimizationLevel: config.inference.graphOptimizationLevel,
    },
    'cpu',
  );
}

function size(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

export function formatQuantizeReport(r: QuantizeReport, worst = 10): string {
  const lines: string[] = [];
  const calib = r.method === 'percentile' ? `percentile ${r.percentile ?? 99.999}` : r.method;
  const s = r.settings;
  const w = s.weights;
  // The default's wording is kept as it was before targets existed.
  const weights = w.type === 'int8' && w.symmetric && w.perChannel ? 'per-channel int8' : describeWeights(w);
  lines.push(`wrote ${r.output} (INT8 QDQ: ${calib} calibration, ${r.activationType} activations, ${weights} weights)`);
  if (r.target !== DEFAULT_TARGET) {
    const extras = [
      ...(describeWeights(s.gemmWeights) !== describeWeights(w) ? [`Gemm weights ${describeWeights(s.gemmWeights)}`] : []),
      ...(s.minRealRange !== undefined ? [`ranges at least ${s.minRealRange} wide`] : []),
      s.quantizeSoftmax ? 'Softmax quantized over [0, 1]' : 'Softmax float',
      s.keepActivations ? 'Relu/Clip kept as quantized node units' : 'Relu/Clip folded',
    ];
    lines.push(`target: ${r.target} (${extras.join('; ')})`);
  } else if (s.keepActivations) {
    lines.push('Relu/Clip kept as quantized node units');
  }
  lines.push(r.manifest ? `wrote ${r.manifest} (precision int8)` : `no manifest written (none found for ${r.input})`);
  lines.push('rewrites:');
  for (const w of r.rewrites.length ? r.rewrites : ['none']) lines.push(`  ${w}`);
  if (r.foldedRelus > 0) lines.push(`  ${r.foldedRelus} Relu folded into the quantization of their input`);
  lines.push(`calibration images: ${r.calibrationImages} used, ${r.skippedImages.length} skipped`);
  for (const s of r.skippedImages) lines.push(`  skipped ${s.image}: ${s.error}`);
  if (r.adaround) {
    const a = r.adaround;
    const initial = a.perLayer.reduce((s, l) => s + l.initialMse, 0);
    const final = a.perLayer.reduce((s, l) => s + l.finalMse, 0);
    lines.push(
      `AdaRound: ${a.layers} layers, ${a.iterations} steps each on ${a.images} images, ${(a.durationMs / 1000).toFixed(1)} s, ` +
        `layer output MSE ${initial > 0 ? ((100 * final) / initial).toFixed(0) : '100'} % of round-to-nearest's (summed), ` +
        `peak RSS ${(a.peakMemory / 1e6).toFixed(0)} MB`,
    );
  }
  if (r.biasCorrection) {
    const b = r.biasCorrection;
    lines.push(
      `bias correction: ${b.layers} layers in ${b.passes} passes over ${b.inputs} images, ${(b.durationMs / 1000).toFixed(1)} s ` +
        `(largest shift ${(100 * b.maxRelativeShift).toFixed(1)} % of a channel's RMS)`,
    );
  }
  if (r.heldOut) {
    const line = (h: NonNullable<QuantizeReport['heldOut']>): string =>
      `${h.tensor} SQNR ${h.sqnrDb === null ? 'identical' : `${h.sqnrDb.toFixed(1)} dB`}, top-1 agreement ${(100 * h.top1Agreement).toFixed(1)} %`;
    const allInt8 = r.mixedPrecision?.allInt8HeldOut;
    lines.push(
      `held out (${r.heldOut.images} images, not calibrated on): ${line(r.heldOut)}${allInt8 ? ' (the mixed-precision model written)' : ''}`,
    );
    if (allInt8) lines.push(`held out, all-INT8 model: ${line(allInt8)}`);
  } else {
    lines.push(`held out: none (give --eval-images, or at least ${HOLD_OUT_MIN_IMAGES} calibration images)`);
  }
  if (r.mixedPrecision) lines.push(...formatMixedPrecision(r.mixedPrecision));
  const ratio = r.sizeBytes.before > 0 ? r.sizeBytes.after / r.sizeBytes.before : 0;
  lines.push(`size: ${size(r.sizeBytes.before)} → ${size(r.sizeBytes.after)} (${ratio.toFixed(2)}×)`);
  if (r.floatNodes.length > 0) {
    lines.push(`kept float: ${r.floatNodes.length} node(s)`);
    for (const n of r.floatNodes.slice(0, 10)) lines.push(`  ${n.name} (${n.opType}): ${n.reason}`);
  }
  if (r.worstLayers.length > 0) {
    lines.push('worst layers by SQNR (quantized vs float activation, dB; higher is better):');
    const width = Math.max(...r.worstLayers.slice(0, worst).map((l) => l.node.length));
    for (const l of r.worstLayers.slice(0, worst)) {
      lines.push(`  ${l.sqnrDb.toFixed(1).padStart(6)}  ${l.node.padEnd(width)}  ${l.opType}`);
    }
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}

function formatMixedPrecision(m: NonNullable<QuantizeReport['mixedPrecision']>): string[] {
  const lines: string[] = [];
  const db = (v: number | null): string => (v === null ? 'identical' : `${v.toFixed(1)} dB`);
  lines.push(
    `mixed precision: target ${m.targetSqnrDb} dB ${m.reached ? 'reached' : 'NOT reached'}` +
      `${m.maxLatencyRatio !== undefined ? ` within ${m.maxLatencyRatio} × FP32 latency` : ''}, measured on ${m.images.count} ${m.images.source} images ` +
      `(sensitivity of ${m.candidates} activation groups on ${m.images.sensitivity}: ${(m.sensitivity.durationMs / 1000).toFixed(1)} s; ` +
      `all: ${(m.durationMs / 1000).toFixed(1)} s)`,
  );
  lines.push('  step  SQNR       top-1    latency ×INT8  ×FP32  kept float');
  m.steps.forEach((s, i) => {
    const what =
      i === 0
        ? 'none (all INT8)'
        : `${s.accepted ? '+' : s.rejected === 'latency' ? 'tried, undone (latency):' : 'tried, undone:'} ${s.added} → ${s.layers.length} node(s)`;
    lines.push(
      `  ${String(i).padStart(4)}  ${db(s.sqnrDb).padEnd(9)}  ${`${(100 * s.top1Agreement).toFixed(1)} %`.padStart(7)}  ` +
        `${s.latencyRatio.toFixed(2).padStart(12)}  ${s.latencyRatioToFloat.toFixed(2).padStart(5)}  ${what}`,
    );
  });
  lines.push(`  kept float in the written model: ${m.kept.length > 0 ? m.kept.join(', ') : 'none'}`);
  if (m.weightsOnly) {
    const w = m.weightsOnly;
    const beyond = w.sqnrDb !== null && w.sqnrDb < m.targetSqnrDb;
    lines.push(
      `  INT8 weights with float activations: ${db(w.sqnrDb)}, top-1 ${(100 * w.top1Agreement).toFixed(1)} %` +
        (beyond ? ': below the target, so activation precision alone will not reach it; the weights must be kept float too' : ''),
    );
  }
  return lines;
}
