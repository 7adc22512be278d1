/**
 * Model manifests (docs/ARCHITECTURE.md, "Contracts"): how to feed a model and read its output.
 *
 * Found as `<model>.json` beside the ONNX file (e.g. `x.onnx.json`), or as `models/<name>.json`
 * whose `file` names the model. A manifest's `file` and `labels` are relative to its own directory.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isFile, writeFileAtomic } from '../util/index.js';

/** Two levels up from both src/model and dist/model. */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const modelsDir = path.join(projectRoot, 'models');

export type ChannelOrder = 'RGB' | 'BGR';
export type ResizeMode = 'crop' | 'fill' | 'pad';
export type Layout = 'NCHW' | 'NHWC';

export interface ModelManifest {
  name: string;
  /** ONNX file, relative to the manifest's directory. */
  file: string;
  source?: { url: string; sha256: string; size: number };
  input: {
    name: string;
    layout: Layout;
    width: number;
    height: number;
    channels: ChannelOrder;
    /** value = (pixel * scale - mean[c]) / std[c], channels in `channels` order */
    scale: number;
    mean: [number, number, number];
    std: [number, number, number];
    resize: ResizeMode;
  };
  output: { name: string; activation: 'softmax' | 'none' };
  /** Label file, relative to the manifest's directory. */
  labels?: string;
  precision?: 'fp32' | 'int8';
  /** True when the weights are generated (model build): labels are then meaningless. */
  synthetic?: boolean;
  variant?: string;
  notes?: string;
  /** How an INT8 model was quantized (`model quantize`): the target preset and what it resolved to. */
  quantization?: { target: string; [setting: string]: unknown };
}

export class ManifestError extends Error {
  override name = 'ManifestError';
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * Checks an untrusted object against the manifest contract. Every problem is reported at once,
 * each as `<origin>: <field> = <value>: <reason>`.
 */
export function validateManifest(obj: unknown, origin = 'manifest'): ModelManifest {
  const errors: string[] = [];
  const bad = (field: string, value: unknown, reason: string): void => {
    errors.push(`${field} = ${show(value)}: ${reason}`);
  };
  if (!isObj(obj)) throw new ManifestError(`${origin}: expected a JSON object, got ${show(obj)}`);

  const str = (o: Obj, key: string, prefix: string, required = true): void => {
    const v = o[key];
    if (v === undefined && !required) return;
    if (typeof v !== 'string' || v.trim() === '') bad(prefix + key, v, 'must be a non-empty string');
  };
  const num = (o: Obj, key: string, prefix: string, check: (n: number) => boolean, reason: string): void => {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) bad(prefix + key, v, reason);
  };
  const oneOf = (o: Obj, key: string, prefix: string, allowed: readonly unknown[], required = true): void => {
    const v = o[key];
    if (v === undefined && !required) return;
    if (!allowed.includes(v)) bad(prefix + key, v, `must be one of ${allowed.map((a) => show(a)).join(', ')}`);
  };
  const triple = (o: Obj, key: string, prefix: string, nonZero: boolean): void => {
    const v = o[key];
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!nonZero || x !== 0))) {
      bad(prefix + key, v, nonZero ? 'must be 3 non-zero numbers' : 'must be 3 numbers');
    }
  };

  str(obj, 'name', '');
  str(obj, 'file', '');

  if (obj.source !== undefined) {
    if (!isObj(obj.source)) bad('source', obj.source, 'must be an object {url, sha256, size}');
    else {
      const s = obj.source;
      if (typeof s.url !== 'string' || !/^https?:\/\//.test(s.url)) bad('source.url', s.url, 'must be an http(s) URL');
      if (typeof s.sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(s.sha256)) {
        bad('source.sha256', s.sha256, 'must be 64 hex digits');
      }
      num(s, 'size', 'source.', (n) => Number.isInteger(n) && n > 0, 'must be a positive integer (bytes)');
    }
  }

  if (!isObj(obj.input)) bad('input', obj.input, 'must be an object');
  else {
    const i = obj.input;
    str(i, 'name', 'input.');
    oneOf(i, 'layout', 'input.', ['NCHW', 'NHWC']);
    num(i, 'width', 'input.', (n) => Number.isInteger(n) && n > 0, 'must be a positive integer');
    num(i, 'height', 'input.', (n) => Number.isInteger(n) && n > 0, 'must be a positive integer');
    oneOf(i, 'channels', 'input.', ['RGB', 'BGR']);
    num(i, 'scale', 'input.', (n) => n !== 0, 'must be a non-zero number');
    triple(i, 'mean', 'input.', false);
    triple(i, 'std', 'input.', true);
    oneOf(i, 'resize', 'input.', ['crop', 'fill', 'pad']);
  }

  if (!isObj(obj.output)) bad('output', obj.output, 'must be an object');
  else {
    str(obj.output, 'name', 'output.');
    oneOf(obj.output, 'activation', 'output.', ['softmax', 'none']);
  }

  str(obj, 'labels', '', false);
  oneOf(obj, 'precision', '', ['fp32', 'int8'], false);
  oneOf(obj, 'synthetic', '', [true, false], false);
  str(obj, 'variant', '', false);
  if (obj.notes !== undefined && typeof obj.notes !== 'string') bad('notes', obj.notes, 'must be a string');
  if (obj.quantization !== undefined) {
    if (!isObj(obj.quantization)) bad('quantization', obj.quantization, 'must be an object');
    else str(obj.quantization as Obj, 'target', 'quantization.');
  }

  if (errors.length > 0) {
    throw new ManifestError(`${origin}: invalid model manifest:\n  ${errors.join('\n  ')}`);
  }
  return obj as unknown as ModelManifest;
}

export async function loadManifest(manifestPath: string): Promise<ModelManifest> {
  let text: string;
  try {
    text = await readFile(manifestPath, 'utf8');
  } catch (err) {
    throw new ManifestError(`cannot read model manifest ${manifestPath}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ManifestError(`${manifestPath}: not valid JSON: ${(err as Error).message}`);
  }
  return validateManifest(parsed, manifestPath);
}

/**
 * Finds the manifest of a model file: `<model>.json` beside it, else a manifest in `searchDirs`
 * (default: the project's models/ folder) whose `file` resolves to the same path.
 * Returns undefined when there is none; an invalid manifest beside the model is an error.
 */
export async function findManifestForModel(
  modelPath: string,
  searchDirs: string[] = [modelsDir],
): Promise<{ manifest: ModelManifest; manifestPath: string } | undefined> {
  const abs = path.resolve(modelPath);
  const beside = `${abs}.json`;
  if (await isFile(beside)) return { manifest: await loadManifest(beside), manifestPath: beside };

  for (const dir of searchDirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
    } catch {
      continue;
    }
    for (const n of names) {
      const p = path.join(dir, n);
      let m: ModelManifest;
      try {
        m = await loadManifest(p);
      } catch {
        continue; // an unrelated broken manifest must not hide the right one
      }
      if (path.resolve(dir, m.file) === abs) return { manifest: m, manifestPath: p };
    }
  }
  return undefined;
}

export interface ResolvedModel {
  modelPath: string;
  manifest: ModelManifest;
  manifestPath: string;
}

/**
 * Resolves a model from a path and/or a manifest (config `model.path` / `model.manifest`).
 * With only a manifest, its `file` is the model; with only a path, the manifest is found beside it;
 * with both, the path wins over the manifest's `file`.
 */
export async function resolveModel(opts: { path?: string; manifest?: string }): Promise<ResolvedModel> {
  if (opts.manifest) {
    const manifestPath = path.resolve(opts.manifest);
    const manifest = await loadManifest(manifestPath);
    const modelPath = opts.path ? path.resolve(opts.path) : path.resolve(path.dirname(manifestPath), manifest.file);
    return { modelPath, manifest, manifestPath };
  }
  if (opts.path) {
    const modelPath = path.resolve(opts.path);
    const found = await findManifestForModel(modelPath);
    if (!found) {
      throw new ManifestError(
        `no manifest for model ${modelPath}: expected ${modelPath}.json beside it or a models/*.json whose "file" names it`,
      );
    }
    return { modelPath, ...found };
  }
  throw new ManifestError('no model given: set model.path or model.manifest');
}

/**
 * Writes `<model>.json` beside a model with `file` set to the model's base name; returns its path.
 * `labelsBaseDir` is the directory the given manifest's relative `labels` path is relative to
 * (e.g. the source manifest's directory); it is rewritten relative to the new location.
 */
export async function writeManifestBeside(modelPath: string, manifest: ModelManifest, labelsBaseDir?: string): Promise<string> {
  const manifestPath = `${path.resolve(modelPath)}.json`;
  const out: ModelManifest = { ...manifest, file: path.basename(modelPath) };
  if (out.labels && labelsBaseDir) {
    const labelsAbs = path.resolve(labelsBaseDir, out.labels);
    out.labels = path.relative(path.dirname(manifestPath), labelsAbs) || labelsAbs;
  }
  validateManifest(out, manifestPath);
  await writeFileAtomic(manifestPath, `${JSON.stringify(out, null, 2)}\n`);
  return manifestPath;
}

/**
 * Reads the label file named by the manifest (relative to `manifestDir`), one label per line.
 * Undefined when the manifest names none; a missing file is an error.
 */
export async function loadLabels(manifest: ModelManifest, manifestDir: string): Promise<string[] | undefined> {
  if (!manifest.labels) return undefined;
  const p = path.resolve(manifestDir, manifest.labels);
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch (err) {
    throw new ManifestError(`cannot read labels of model ${manifest.name}: ${p}: ${(err as Error).message}`);
  }
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  return lines;
}
