/**
 * File names of the two session caches in the state directory. Each name carries everything that makes
 * the file valid, so a changed model, runtime or option simply misses and the stale file is replaced.
 */
import { createHash } from 'node:crypto';
import { cpus } from 'node:os';
import path from 'node:path';
import type { SessionSettings } from './types.js';

const stem = (modelPath: string) => path.basename(modelPath, '.onnx');
const short = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 8);

/**
 * A CPU session's optimized graph. Level 'all' bakes in CPU-specific layouts (NCHWc), so the CPU model
 * is part of the key.
 */
export function optimizedModelFile(dir: string, s: SessionSettings, modelSha256: string, runtimeVersion: string): string {
  const cpu = short(`${process.arch} ${cpus()[0]?.model ?? ''}`);
  return path.join(
    dir,
    `${stem(s.modelPath)}-${modelSha256.slice(0, 16)}-ort${runtimeVersion}-${cpu}-cpu-${s.graphOptimizationLevel}.onnx`,
  );
}

/** Prefix shared by every EP context file of one model name and provider (older ones are pruned by it). */
export function epContextPrefix(s: SessionSettings, provider: string): string {
  return `${stem(s.modelPath)}-${provider}-`;
}

/** An accelerator's compiled graph (ORT EP context): keyed by model, runtime, provider and its options. */
export function epContextFile(dir: string, s: SessionSettings, provider: string, modelSha256: string, runtimeVersion: string): string {
  const options = short(JSON.stringify({ options: s.providerOptions?.[provider] ?? {}, cpuFallback: s.cpuFallback ?? true }));
  return path.join(dir, `${epContextPrefix(s, provider)}${modelSha256.slice(0, 16)}-ort${runtimeVersion}-${options}_ctx.onnx`);
}

/** Optimized CPU models kept in the cache folder, at most (each is about the size of its model). */
export const KEEP_OPTIMIZED_MODELS = 4;

/**
 * Which optimized models in the cache folder to remove once `keep` is written: all but the
 * KEEP_OPTIMIZED_MODELS last used (`usedMs`, the file's mtime, touched at each use). Without this the
 * folder keeps one file per model version, INT8 variant and ONNX Runtime upgrade, for months.
 */
export function staleOptimizedModels(files: ReadonlyArray<{ name: string; usedMs: number }>, keep: string): string[] {
  return files
    .filter((f) => f.name !== keep && /-cpu-(basic|extended|all)\.onnx$/.test(f.name))
    .sort((a, b) => b.usedMs - a.usedMs)
    .slice(KEEP_OPTIMIZED_MODELS - 1)
    .map((f) => f.name);
}
