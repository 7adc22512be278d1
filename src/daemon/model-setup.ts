// Which model the daemon (and classify/bench) runs: the configured one, or the built Inception V2,
// quantized and cached when INT8 is wanted. Wiring layer: it may use model/ and vision/.
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { projectRoot, type Config, type QuantizationTargetName } from '../config/index.js';
import type { SessionSettings } from '../inference/index.js';
import { fileSha256, ImageListError, listImageFiles, pathExists } from '../util/index.js';
import type { ChildMessage, ChildRequest } from './model-setup-child.js';
// Only the manifest part of model/ is imported eagerly: the builder and the quantizer load ONNX Runtime,
// which the daemon's main thread must not (its memory, and inference.runtime may name another build
// that the worker loads: two libonnxruntime.so.1 in one process would resolve to the first).
import { loadLabels, resolveModel, type ModelManifest, type ResolvedModel } from '../model/manifest.js';
import type { HeldOutReport } from '../model/quantize/held-out.js';
import { HOLD_OUT_MIN_IMAGES, holdOutEvery } from '../model/quantize/split.js';

export interface PreparedModel {
  modelPath: string;
  manifestPath: string;
  manifest: ModelManifest;
  labels?: string[];
  precision: 'fp32' | 'int8';
  /** Built with seeded weights: its labels mean nothing. */
  synthetic: boolean;
}

export class ModelSetupError extends Error {
  override name = 'ModelSetupError';
}

/** A start was cancelled (SIGTERM while the model was being prepared): not a failure. */
export class StartCancelledError extends Error {
  override name = 'StartCancelledError';
}

/** File name of the model `model build` writes when no model is configured. */
export const BUILT_MODEL_FILE = 'inception-v2-built.onnx';

/**
 * The FP32 model named by the config, or the built Inception V2 in the model cache (built on first
 * use, which takes a few seconds and says plainly that its weights are synthetic).
 */
async function resolveFloatModel(config: Config, logger: Logger, onStatus?: (status: string) => void) {
  if (config.model.path || config.model.manifest) {
    return resolveModel({ path: config.model.path || undefined, manifest: config.model.manifest || undefined });
  }
  const builtPath = path.join(config.model.cacheDir, BUILT_MODEL_FILE);
  if (!(await pathExists(builtPath)) || !(await pathExists(`${builtPath}.json`))) {
    await mkdir(config.model.cacheDir, { recursive: true });
    logger.warn(
      { path: builtPath },
      'no model configured: building the Inception V2 topology with SYNTHETIC seeded weights ' +
        '(its labels mean nothing; set model.path to a real model, e.g. from `inceptiond model fetch`)',
    );
    onStatus?.('building the Inception V2 model (once)');
    const { writeBuiltModel } = await import('../model/build.js');
    const built = await writeBuiltModel(builtPath, { seed: 1 });
    logger.info({ path: built.modelPath, params: built.params }, 'model built');
  }
  return resolveModel({ path: builtPath });
}

export interface PrepareOptions {
  /** Images to calibrate on when the model must be quantized here (default: from model.calibration.path, see calibrationImagesFor). */
  calibrationImages?: () => Promise<string[]>;
  /**
   * Told when a slow step starts ("building the model", "quantizing the model to INT8") so the daemon
   * can say so to systemd (STATUS=, EXTEND_TIMEOUT_USEC=): on a small board a first start can take minutes.
   */
  onStatus?: (status: string) => void;
  /** Where prepareModelIsolated's child logs: 1 (stdout, the daemon's log) or 2 (a one-shot command). Default 1. */
  logFd?: 1 | 2;
  /** prepareModelIsolated: aborting kills the child (a SIGTERM during a long quantization) and rejects with StartCancelledError. */
  signal?: AbortSignal;
}

/**
 * Bumped when the quantizer's output changes for the same inputs, so cached INT8 models are redone.
 * 2: with 20 images or more, every 5th is held out for the end-to-end figure, not calibrated on.
 * 3: AveragePool as a depthwise Conv (times a count map) for the CPU targets: 9–10 % faster INT8.
 */
const QUANTIZER_VERSION = 3;
/** Most held-out images the daemon compares the INT8 model on (the figure it logs). */
const MAX_DAEMON_HELD_OUT_IMAGES = 16;
/**
 * The daemon takes at most this many images, spread evenly over the sorted list; from 20 on, every 5th
 * of them is held out for the figure it logs (split.ts), the rest calibrate.
 */
export const MAX_DAEMON_CALIBRATION_IMAGES = 64;
/** Up to `max` items spread evenly over the list (first and last included), order kept. */
function spread<T>(items: T[], max: number): T[] {
  if (items.length <= max) return items;
  if (max === 1) return [items[0]!];
  return Array.from({ length: max }, (_, i) => items[Math.round((i * (items.length - 1)) / (max - 1))]!);
}

/**
 * Where the daemon's own quantization calibrates: model.calibration.path; else the path of the first
 * files source (the scene the daemon will see); else the bundled sample images.
 */
export function calibrationPathFor(config: Config): string {
  if (config.model.calibration.path) return config.model.calibration.path;
  const files = config.sources.find((s) => s.backend === 'files' && s.files.path);
  if (files) return files.files.path;
  if (config.capture.backend === 'files' && config.capture.files.path) return config.capture.files.path;
  return path.join(projectRoot, 'models', 'samples');
}

export async function calibrationImagesFor(config: Config): Promise<string[]> {
  const where = calibrationPathFor(config);
  const what = config.model.calibration.path ? 'model.calibration.path' : 'calibration folder';
  let images: string[];
  try {
    images = await listImageFiles(where, what);
  } catch (err) {
    // The daemon reports every failure to prepare its model as a ModelSetupError.
    throw err instanceof ImageListError ? new ModelSetupError(err.message) : err;
  }
  return spread(images, MAX_DAEMON_CALIBRATION_IMAGES);
}

/**
 * The preset the daemon quantizes for: as configured, or the first execution provider's. A CPU gets
 * `cpu` on both x86 and ARM (the measured default; `cpu-arm` follows ORT's documentation but has not
 * been timed on an ARM CPU).
 */
export function quantizationTargetFor(config: Config): Exclude<QuantizationTargetName, 'auto'> {
  const chosen = config.model.quantizationTarget;
  return chosen !== 'auto' ? chosen : targetForProvider(config.inference.executionProviders[0] ?? 'cpu');
}

/** The `model quantize --target` preset shaped for an execution provider. */
export function targetForProvider(provider: string): Exclude<QuantizationTargetName, 'auto'> {
  switch (provider) {
    case 'qnn':
      return 'qnn-htp';
    case 'vsinpu':
    case 'acl':
    case 'xnnpack':
      return provider;
    default:
      return 'cpu';
  }
}

/** What makes a cached INT8 model valid: the source model's bytes and everything passed to the quantizer. */
export interface Int8CacheKey {
  sourceSha256: string;
  method: Config['model']['calibration']['method'];
  /** the `model quantize --target` preset (its activation type follows) */
  target: Exclude<QuantizationTargetName, 'auto'>;
  percentile?: number;
  /** sha256 of the calibration files' absolute paths and sizes, in order */
  calibrationHash: string;
}

async function calibrationListHash(images: string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const image of images) {
    let size = -1;
    try {
      size = (await stat(image)).size;
    } catch {
      // unreadable now: quantizeModel will skip it; still part of the key
    }
    hash.update(`${path.resolve(image)}\0${size}\n`);
  }
  return hash.digest('hex');
}

/**
 * `<stem>.int8-<sha12 of the source model>-<method>-<activation type>-<hash8 of the options>.onnx`, e.g.
 * `inception-v2-built.int8-3f2a9c1b4d5e-percentile-uint8-a1b2c3d4.onnx`. The options hash covers the
 * calibration file list, the percentile and the quantizer version; a changed model or option gives a new name.
 */
export function int8CacheFileName(sourceModel: string, key: Int8CacheKey): string {
  const stem = path.basename(sourceModel).replace(/\.onnx$/i, '');
  const options = createHash('sha256')
    .update(JSON.stringify({ v: QUANTIZER_VERSION, percentile: key.percentile ?? null, calibration: key.calibrationHash }))
    .digest('hex');
  return `${stem}.int8-${key.sourceSha256.slice(0, 12)}-${key.method}-${key.target}-${options.slice(0, 8)}.onnx`;
}

/**
 * The INT8 version of an FP32 model, quantized once and cached in model.cacheDir. The model file is
 * written atomically (temp, fsync, rename) and its manifest after it, so a manifest beside a cached
 * model means the model is whole; a crash mid-quantization leaves at most a hidden temp file, which
 * is never used and is removed by the next quantization.
 */
async function int8FromCache(config: Config, logger: Logger, fp32: ResolvedModel, opts: PrepareOptions): Promise<ResolvedModel> {
  const listed = await (opts.calibrationImages ?? (() => calibrationImagesFor(config)))();
  if (listed.length === 0) throw new ModelSetupError('no calibration images to quantize the model with');
  const split = holdOutEvery(listed);
  const images = split.calibration;
  const heldOut = spread(split.heldOut, MAX_DAEMON_HELD_OUT_IMAGES);
  const method = config.model.calibration.method;
  const preset = quantizationTargetFor(config);
  const key: Int8CacheKey = {
    sourceSha256: await fileSha256(fp32.modelPath),
    method,
    target: preset,
    ...(method === 'percentile' ? { percentile: 99.999 } : {}),
    calibrationHash: await calibrationListHash(listed),
  };
  const cacheDir = config.model.cacheDir;
  const target = path.join(cacheDir, int8CacheFileName(fp32.modelPath, key));
  if ((await pathExists(target)) && (await pathExists(`${target}.json`))) {
    logger.info({ path: target, source: fp32.modelPath }, 'using cached INT8 model');
    // The manifest's mtime says when the variant was last used (see pruneCachedVariants); the model
    // file itself is left untouched.
    const now = new Date();
    await utimes(`${target}.json`, now, now).catch(() => undefined);
    return resolveModel({ path: target });
  }

  await mkdir(cacheDir, { recursive: true });
  await removeStaleTemps(cacheDir, logger);
  logger.info(
    { source: fp32.modelPath, out: target, method, calibrationImages: images.length, calibrationFrom: path.dirname(images[0]!) },
    `quantizing ${path.basename(fp32.modelPath)} to INT8 (${method} calibration on ${images.length} images); done once, then cached`,
  );
  opts.onStatus?.(`quantizing ${path.basename(fp32.modelPath)} to INT8 (once)`);
  const t0 = performance.now();
  let report: Awaited<ReturnType<typeof import('../model/quantize/index.js').quantizeModel>>;
  try {
    const { quantizeModel } = await import('../model/quantize/index.js');
    report = await quantizeModel({
      input: fp32.modelPath,
      output: target,
      calibration: { images },
      ...(heldOut.length > 0 ? { evaluation: { images: heldOut } } : {}),
      method,
      target: preset,
      ...(key.percentile !== undefined ? { percentile: key.percentile } : {}),
      logger: logger.child({ component: 'quantize' }),
      progress: false,
    });
  } catch (err) {
    // The model may be written and its manifest not: remove it so nothing half-done lingers.
    await rm(target, { force: true });
    await rm(`${target}.json`, { force: true });
    throw new ModelSetupError(`cannot quantize ${fp32.modelPath} to INT8: ${(err as Error).message}`, { cause: err });
  }
  if (!report.manifest) {
    await rm(target, { force: true });
    throw new ModelSetupError(`quantizing ${fp32.modelPath} wrote no manifest (the source has none)`);
  }
  const seconds = (performance.now() - t0) / 1000;
  logger.info(
    {
      path: target,
      durationMs: Math.round(seconds * 1000),
      calibrationImages: report.calibrationImages,
      skippedImages: report.skippedImages.length,
      sizeBytes: report.sizeBytes,
      worstLayerSqnrDb: report.worstLayers[0] ? Math.round(report.worstLayers[0].sqnrDb * 10) / 10 : undefined,
    },
    `INT8 model ready in ${seconds.toFixed(1)} s (${mb(report.sizeBytes.before)} → ${mb(report.sizeBytes.after)})`,
  );
  logHeldOut(logger, report.heldOut, listed.length);
  await pruneCachedVariants(cacheDir, target, key.sourceSha256, logger);
  return resolveModel({ path: target });
}

/** The end-to-end figure of the daemon's own quantization, one info line (none held out: says why). */
function logHeldOut(logger: Logger, heldOut: HeldOutReport | undefined, listed: number): void {
  if (!heldOut) {
    logger.info(
      { heldOutImages: 0, calibrationImages: listed },
      `INT8 accuracy not measured: ${listed} calibration image(s), at least ${HOLD_OUT_MIN_IMAGES} are needed to hold some out`,
    );
    return;
  }
  const db = heldOut.sqnrDb === null ? 'identical' : `${heldOut.sqnrDb.toFixed(1)} dB`;
  logger.info(
    {
      heldOutImages: heldOut.images,
      tensor: heldOut.tensor,
      sqnrDb: heldOut.sqnrDb === null ? null : Math.round(heldOut.sqnrDb * 10) / 10,
      top1Agreement: Math.round(heldOut.top1Agreement * 1000) / 1000,
    },
    `INT8 vs FP32 on ${heldOut.images} held-out image(s): ${heldOut.tensor} SQNR ${db}, top-1 agreement ${(100 * heldOut.top1Agreement).toFixed(1)} %`,
  );
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Hidden temp files (`.<name>.<pid>.<ms>.tmp`, from writeFileAtomic) of INT8 cache entries whose writer is gone. */
async function removeStaleTemps(cacheDir: string, logger: Logger): Promise<void> {
  for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
    const m = /^\..+\.int8-.+\.onnx(?:\.json)?\.(\d+)\.\d+\.tmp$/.exec(name);
    if (!m || processAlive(Number(m[1]))) continue;
    await rm(path.join(cacheDir, name), { force: true });
    logger.info({ file: name }, 'removed a temp file left by an interrupted quantization');
  }
}

/** INT8 variants of one model (other calibration method, target or images) kept in the cache, at most. */
export const KEEP_INT8_VARIANTS = 3;

/**
 * Bounds the INT8 cache, which otherwise grows by a model (11 MB for Inception V2) per calibration
 * change for as long as the board runs: files made from an earlier version of the same model (same stem,
 * other source hash) go, and of the variants of this version the KEEP_INT8_VARIANTS last used stay
 * (last use = the manifest's mtime), so switching between two settings does not quantize each time.
 */
async function pruneCachedVariants(cacheDir: string, keep: string, sourceSha256: string, logger: Logger): Promise<void> {
  const stem = path.basename(keep).split('.int8-')[0]!;
  const ours = `${stem}.int8-${sourceSha256.slice(0, 12)}-`;
  const variants: { name: string; usedMs: number }[] = [];
  for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
    if (!name.startsWith(`${stem}.int8-`) || !/\.onnx(\.json)?$/.test(name)) continue;
    if (!name.startsWith(ours)) {
      await rm(path.join(cacheDir, name), { force: true });
      logger.info({ file: name }, 'removed an INT8 model cached for an earlier version of the model');
    } else if (name.endsWith('.onnx') && name !== path.basename(keep)) {
      const used = await stat(path.join(cacheDir, `${name}.json`)).catch(() => undefined);
      variants.push({ name, usedMs: used?.mtimeMs ?? 0 });
    }
  }
  variants.sort((a, b) => b.usedMs - a.usedMs);
  for (const { name } of variants.slice(KEEP_INT8_VARIANTS - 1)) {
    await rm(path.join(cacheDir, name), { force: true });
    await rm(path.join(cacheDir, `${name}.json`), { force: true });
    logger.info({ file: name }, 'removed the least recently used INT8 variant of the model');
  }
}

/**
 * The model to run, with its manifest and labels, following model.precision:
 * - auto: an INT8 model runs as is; the built model (no model configured) is quantized once and
 *   cached; a configured FP32 model runs FP32 (with a hint how to quantize it);
 * - int8: an FP32 model is quantized once at startup and cached;
 * - fp32: an INT8 model is refused.
 */
export async function prepareModel(config: Config, logger: Logger, opts: PrepareOptions = {}): Promise<PreparedModel> {
  const configured = !!(config.model.path || config.model.manifest);
  let resolved = await resolveFloatModel(config, logger, opts.onStatus);
  if (!(await pathExists(resolved.modelPath))) {
    throw new ModelSetupError(
      `model file not found: ${resolved.modelPath} (named by ${resolved.manifestPath}); ` +
        'fetch it with `inceptiond model fetch` or build one with `inceptiond model build`',
    );
  }
  const wanted = config.model.precision;
  const actual = resolved.manifest.precision ?? 'fp32';
  if (wanted === 'fp32' && actual === 'int8') {
    throw new ModelSetupError(
      `model.precision is fp32 but ${resolved.modelPath} is an INT8 model: ` +
        'point model.path at its FP32 original, or set model.precision to auto',
    );
  }
  // WebGPU has no QuantizeLinear kernel: an INT8 QDQ model sends every quantized tensor to the CPU and
  // back on each run, slower than FP32 on the GPU (measured: 1.15 s vs 0.77 s per run on lavapipe).
  const gpuFirst = config.inference.executionProviders[0] === 'webgpu';
  if (actual === 'fp32' && wanted === 'auto' && !configured && gpuFirst) {
    logger.info({ provider: 'webgpu' }, 'running the built model as FP32: WebGPU runs FP32 faster than an INT8 QDQ model');
  } else if (actual === 'fp32' && (wanted === 'int8' || (wanted === 'auto' && !configured))) {
    resolved = await int8FromCache(config, logger, resolved, opts);
  } else if (actual === 'fp32' && wanted === 'auto') {
    logger.info(
      { path: resolved.modelPath },
      `running the FP32 model; its INT8 version would take about 0.4× the time on CPU: \`inceptiond model quantize ${resolved.modelPath} ` +
        `${resolved.modelPath.replace(/\.onnx$/i, '')}.int8.onnx --calibration DIR --from-source 64\` then point model.path at it ` +
        '(or set model.precision to int8 to have the daemon quantize it at startup)',
    );
  }
  const precision = resolved.manifest.precision ?? 'fp32';
  const labels = await loadLabels(resolved.manifest, path.dirname(resolved.manifestPath));
  return {
    ...resolved,
    labels,
    precision,
    synthetic: resolved.manifest.synthetic === true,
  };
}

/** Settings the daemon would use for this config; one place so classify, bench and doctor agree with it. */
export function sessionSettingsFor(config: Config, model: PreparedModel): SessionSettings {
  return {
    modelPath: model.modelPath,
    inputName: model.manifest.input.name,
    outputName: model.manifest.output.name,
    executionProviders: config.inference.executionProviders,
    threads: config.inference.threads,
    allowSpinning: config.inference.allowSpinning,
    graphOptimizationLevel: config.inference.graphOptimizationLevel,
    providerOptions: config.inference.providerOptions,
    cpuFallback: config.inference.cpuFallback,
    runtime: config.inference.runtime,
  };
}

/**
 * glibc settings for the model-setup child (the environment's own values win). The child builds the
 * model, then quantizes it: with glibc's defaults, the large arrays freed by one step stay in its heap
 * (the mmap threshold rises to the size of the largest freed block, up to 32 MB) and in per-thread
 * arenas, so each step's peak stacks on the last one's leftovers. A fixed 128 KiB threshold returns
 * every large block to the kernel when freed, and two arenas bound what ORT's and libuv's threads keep.
 * Measured on the built Inception V2 (8 calibration images): child peak 255–272 MB instead of 305–322 MB,
 * the quantization about 0.5 s slower. Under the unit's jemalloc, which the child inherits and which
 * ignores these, it peaked at 277–288 MB (README "Daemon memory, third round: the allocator").
 */
const CHILD_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '2' };

/**
 * prepareModel in a short-lived child process (see model-setup-child.ts), for the daemon. Falls back to
 * running in this process where the compiled child is absent (tests running the TypeScript sources).
 */
export async function prepareModelIsolated(config: Config, logger: Logger, opts: PrepareOptions = {}): Promise<PreparedModel> {
  const childModule = fileURLToPath(new URL('./model-setup-child.js', import.meta.url));
  if (!(await pathExists(childModule))) return prepareModel(config, logger, opts);
  const { fork } = await import('node:child_process');
  if (opts.signal?.aborted) throw new StartCancelledError('model preparation cancelled');
  const child = fork(childModule, [], {
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...CHILD_MALLOC_ENV, ...process.env },
  });
  return new Promise<PreparedModel>((resolve, reject) => {
    let settled = false;
    const cancel = () => {
      if (settled) return;
      settled = true;
      child.kill('SIGTERM');
      logger.info('model preparation cancelled: its process was stopped (temporary files are removed at the next start)');
      reject(new StartCancelledError('model preparation cancelled'));
    };
    opts.signal?.addEventListener('abort', cancel, { once: true });
    child.once('exit', () => opts.signal?.removeEventListener('abort', cancel));
    child.on('message', (message: ChildMessage) => {
      if (message.kind === 'status') {
        opts.onStatus?.(message.status);
      } else if (message.kind === 'done') {
        settled = true;
        resolve(message.model);
      } else {
        settled = true;
        reject(Object.assign(new ModelSetupError(message.message), { cause: message.name }));
      }
    });
    child.once('error', (err) => {
      if (settled) return;
      settled = true;
      reject(err);
    });
    child.once('exit', (code, signal) => {
      if (!settled) reject(new ModelSetupError(`model setup process ended (${signal ?? `exit ${code}`}) before finishing`));
    });
    child.send({ config, level: logger.level, logFd: opts.logFd ?? 1 } satisfies ChildRequest);
  });
}
