// Which model the daemon (and classify/bench) runs: the configured one, or the built Inception V2,
// quantized and cached when INT8 is wanted. Wiring layer: it may use model/ and vision/.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from './config/index.js';
import type { SessionSettings } from './inference/index.js';
import {
  loadLabels,
  resolveModel,
  writeBuiltModel,
  type ModelManifest,
} from './model/index.js';

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

/** File name of the model `model build` writes when no model is configured. */
export const BUILT_MODEL_FILE = 'inception-v2-built.onnx';

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

export async function fileSha256(p: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(p)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * The FP32 model named by the config, or the built Inception V2 in the model cache (built on first
 * use, which takes a few seconds and says plainly that its weights are synthetic).
 */
async function resolveFloatModel(config: Config, logger: Logger) {
  if (config.model.path || config.model.manifest) {
    return resolveModel({ path: config.model.path || undefined, manifest: config.model.manifest || undefined });
  }
  const builtPath = path.join(config.model.cacheDir, BUILT_MODEL_FILE);
  if (!(await exists(builtPath)) || !(await exists(`${builtPath}.json`))) {
    await mkdir(config.model.cacheDir, { recursive: true });
    logger.warn(
      { path: builtPath },
      'no model configured: building the Inception V2 topology with SYNTHETIC seeded weights ' +
        '(its labels mean nothing; set model.path to a real model, e.g. from `inceptiond model fetch`)',
    );
    const built = await writeBuiltModel(builtPath, { seed: 1 });
    logger.info({ path: built.modelPath, params: built.params }, 'model built');
  }
  return resolveModel({ path: builtPath });
}

export interface PrepareOptions {
  /** Images to calibrate on when the model must be quantized here (the daemon passes its sample/scene frames). */
  calibrationImages?: () => Promise<string[]>;
}

export async function prepareModel(config: Config, logger: Logger, _opts: PrepareOptions = {}): Promise<PreparedModel> {
  const resolved = await resolveFloatModel(config, logger);
  if (!(await exists(resolved.modelPath))) {
    throw new ModelSetupError(
      `model file not found: ${resolved.modelPath} (named by ${resolved.manifestPath}); ` +
        'fetch it with `inceptiond model fetch` or build one with `inceptiond model build`',
    );
  }
  const precision = resolved.manifest.precision ?? 'fp32';
  if (config.model.precision === 'int8' && precision !== 'int8') {
    throw new ModelSetupError(
      `model.precision is int8 but ${resolved.modelPath} is ${precision}: quantize it with ` +
        '`inceptiond model quantize IN OUT --calibration DIR` and point model.path at OUT',
    );
  }
  if (config.model.precision === 'fp32' && precision === 'int8') {
    throw new ModelSetupError(`model.precision is fp32 but ${resolved.modelPath} is an INT8 model`);
  }
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
  };
}
