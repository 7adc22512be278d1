/**
 * Which onnxruntime-node build runs inference: the stock package, or `inference.runtime` — the path or
 * package name of another build (one compiled with QNN, ACL or VSINPU for a board's NPU). Loaded only
 * where sessions are created (the inference worker, doctor, bench), so a process never holds two
 * builds: both are libonnxruntime.so.1 and the dynamic linker would hand the second binding the first
 * library. See docs/ARCHITECTURE.md, "Execution providers".
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Ort from 'onnxruntime-node';

export type OrtModule = typeof Ort;

export interface RuntimeInfo {
  /** As configured ('' = the stock onnxruntime-node this package depends on). */
  spec: string;
  /** The file that was loaded. */
  path: string;
  /** Its package.json version, e.g. "1.30.0". */
  version: string;
  /** Providers compiled into the build (listSupportedBackends), lower-case. */
  providers: string[];
}

export class RuntimeLoadError extends Error {
  override name = 'RuntimeLoadError';
}

const requireHere = createRequire(import.meta.url);

/** The module file `spec` names: '' the stock package; an absolute or ./ path (from cwd), else a package name. */
export function resolveRuntime(spec: string, cwd = process.cwd()): string {
  const where = spec ? `inference.runtime "${spec}"` : 'onnxruntime-node';
  try {
    if (!spec) return requireHere.resolve('onnxruntime-node');
    // Like Node's own specifiers: absolute or ./ ../ is a path, anything else a package (or its subpath).
    if (path.isAbsolute(spec) || /^\.\.?(\/|$)/.test(spec)) return requireHere.resolve(path.resolve(cwd, spec));
    return requireHere.resolve(spec, { paths: [cwd, ...(requireHere.resolve.paths(spec) ?? [])] });
  } catch (err) {
    throw new RuntimeLoadError(
      `${where}: not found (${firstLine(err)}); give a package folder, its main file or an installed package name`,
    );
  }
}

/**
 * Why the bundled onnxruntime-node cannot run on this platform (it ships binaries for a few, e.g. none
 * for 32-bit ARM), or undefined when it can. One clear line instead of "Cannot find module …".
 */
export function bundledRuntimeProblem(platform: string = process.platform, arch: string = process.arch): string | undefined {
  const pkg = path.dirname(path.dirname(requireHere.resolve('onnxruntime-node')));
  const binDir = path.join(pkg, 'bin', 'napi-v6');
  if (existsSync(path.join(binDir, platform, arch, 'onnxruntime_binding.node'))) return undefined;
  const shipped = readdirSafe(binDir).flatMap((p) => readdirSafe(path.join(binDir, p)).map((a) => `${p}-${a}`));
  const arm32 = platform === 'linux' && arch === 'arm' ? 'install the 64-bit (arm64) OS on the board, or ' : '';
  return (
    `onnxruntime-node ${packageVersionOf(path.join(pkg, 'package.json'))} has no binary for ${platform}-${arch} ` +
    `(it ships ${shipped.join(', ')}): ${arm32}build onnxruntime-node for it and name that build in inference.runtime`
  );
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** Loads the build, checks it is an onnxruntime-node and says what it is. */
export function loadRuntime(spec: string, cwd = process.cwd()): { ort: OrtModule; info: RuntimeInfo } {
  if (!spec) {
    const problem = bundledRuntimeProblem();
    if (problem) throw new RuntimeLoadError(problem);
  }
  const file = resolveRuntime(spec, cwd);
  const where = spec ? `inference.runtime "${spec}"` : 'onnxruntime-node';
  let ort: OrtModule;
  try {
    ort = requireHere(file) as OrtModule;
  } catch (err) {
    throw new RuntimeLoadError(`${where}: cannot load ${file}: ${firstLine(err)}`);
  }
  if (
    typeof ort?.InferenceSession?.create !== 'function' ||
    typeof ort.listSupportedBackends !== 'function' ||
    typeof ort.Tensor !== 'function'
  ) {
    throw new RuntimeLoadError(
      `${where}: ${file} is not an onnxruntime-node build (no InferenceSession, Tensor and listSupportedBackends)`,
    );
  }
  const providers = ort.listSupportedBackends().map((b) => b.name.toLowerCase());
  return { ort, info: { spec, path: file, version: packageVersionOf(file), providers } };
}

/** version of the nearest package.json above `file`, or "unknown". */
function packageVersionOf(file: string): string {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name && pkg.version) return pkg.version;
    } catch {
      // no package.json here
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!;
}
