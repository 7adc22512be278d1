/**
 * The same CLI work on both sides: `node dist/cli.js ...` with the host's x86-64 node in the repository,
 * and with the arm64 node under qemu in the arm64 copy of the project. Plus parsing and comparing
 * `classify --json` output, and an arm64 daemon process.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runArm64, spawnArm64, type RunResult, type Toolchain } from '../../scripts/arm64/toolchain.mjs';
import { watchDaemon, type DaemonProcess } from '../helpers/daemon-process.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The environment for a CLI child: the caller's, without any INCEPTIOND_* setting, plus `extra`. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('INCEPTIOND_') && k !== 'NOTIFY_SOCKET') env[k] = v;
  return { ...env, ...extra };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export function x86Cli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), ...args], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

export async function armCli(
  tc: Toolchain,
  projectDir: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 600_000,
): Promise<CliResult> {
  const res: RunResult = await runArm64(tc, ['node', 'dist/cli.js', ...args], { cwd: projectDir, env, timeoutMs });
  if (res.timedOut)
    throw new Error(
      `arm64 \`${args.slice(0, 2).join(' ')}\` was killed after ${timeoutMs / 1000} s; stderr tail: ${res.stderr.slice(-800)}`,
    );
  return { code: res.code, stdout: res.stdout, stderr: res.stderr, ms: res.ms };
}

/** Fails with the command's output when it did not exit 0. */
export function ok(res: CliResult, what: string): CliResult {
  if (res.code !== 0)
    throw new Error(`${what} exited with ${res.code}\nstdout: ${res.stdout.slice(-1500)}\nstderr: ${res.stderr.slice(-3000)}`);
  return res;
}

export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

export interface Classified {
  image: string;
  precision: string;
  provider: string;
  /** Score per class index (NaN where the output left a class out). */
  scores: Float64Array;
  top1: number;
  inferenceMs: number;
}

interface ClassifyLine {
  image: string;
  error?: string;
  model: { precision: string };
  provider: string;
  labels: { index: number; score: number }[];
  inferenceMs: number;
}

export const CLASSES = 1000;

/** `classify --json --top 1000` output → one full score vector per image, in output order. */
export function parseClassify(stdout: string): Classified[] {
  const out: Classified[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    const o = JSON.parse(line) as Partial<ClassifyLine> & { level?: unknown; msg?: unknown };
    if (typeof o.level === 'number' && typeof o.msg === 'string') continue; // a log line, not a result
    if (o.error) throw new Error(`classify failed on ${o.image}: ${o.error}`);
    if (typeof o.image !== 'string' || !Array.isArray(o.labels) || !o.model || !o.labels.length) {
      throw new Error(`unexpected classify --json line: ${line.slice(0, 400)}`);
    }
    const scores = new Float64Array(CLASSES).fill(NaN);
    for (const { index, score } of o.labels) scores[index] = score;
    out.push({
      image: o.image,
      precision: o.model.precision,
      provider: String(o.provider),
      scores,
      top1: o.labels[0]!.index,
      inferenceMs: Number(o.inferenceMs),
    });
  }
  return out;
}

export interface ImageComparison {
  image: string;
  top1: [number, number];
  top1Same: boolean;
  maxAbs: number;
}

export interface Comparison {
  images: ImageComparison[];
  maxAbs: number;
  top1Agree: number;
}

/** Per image: top-1 of each side and max |Δscore| over the classes both sides report. */
export function compare(reference: Classified[], candidate: Classified[]): Comparison {
  if (reference.length !== candidate.length) throw new Error(`compare: ${reference.length} vs ${candidate.length} images`);
  const images = reference.map((r, i) => {
    const c = candidate[i]!;
    if (path.basename(r.image) !== path.basename(c.image)) throw new Error(`compare: ${r.image} vs ${c.image}`);
    let maxAbs = 0;
    let common = 0;
    for (let k = 0; k < CLASSES; k++) {
      if (Number.isNaN(r.scores[k]) || Number.isNaN(c.scores[k])) continue;
      common += 1;
      maxAbs = Math.max(maxAbs, Math.abs(r.scores[k]! - c.scores[k]!));
    }
    if (common === 0) throw new Error(`compare: no class in common for ${r.image}`);
    return { image: path.basename(r.image), top1: [r.top1, c.top1] as [number, number], top1Same: r.top1 === c.top1, maxAbs };
  });
  return { images, maxAbs: Math.max(...images.map((i) => i.maxAbs)), top1Agree: images.filter((i) => i.top1Same).length };
}

export function formatComparison(title: string, c: Comparison): string {
  const rows = c.images.map(
    (i) =>
      `    ${i.image.padEnd(16)} top-1 ${String(i.top1[0]).padStart(3)} / ${String(i.top1[1]).padStart(3)} ${i.top1Same ? 'same' : 'DIFFERENT'}  max|Δ| ${i.maxAbs.toExponential(2)}`,
  );
  return [`${title}: top-1 ${c.top1Agree}/${c.images.length} same, max |Δscore| ${c.maxAbs.toExponential(2)}`, ...rows].join('\n');
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
}

export type { DaemonProcess as Arm64Daemon, LogLine } from '../helpers/daemon-process.js';

/** `node dist/cli.js run -c FILE` as arm64 in the arm64 copy; JSON log lines are parsed as they come. */
export function startArm64Daemon(
  tc: Toolchain,
  projectDir: string,
  configFile: string,
  env: NodeJS.ProcessEnv,
  nodeEnv: Record<string, string> = {},
): DaemonProcess {
  // nodeEnv reaches the arm64 node alone (through env(1) inside the namespace), not the host's unshare:
  // a preloaded jemalloc starts its background thread in every process it loads into, and unshare
  // cannot make a user namespace from a multi-threaded process (EINVAL).
  const prefix = Object.keys(nodeEnv).length ? ['env', ...Object.entries(nodeEnv).map(([k, v]) => `${k}=${v}`)] : [];
  return watchDaemon(
    spawnArm64(tc, [...prefix, 'node', 'dist/cli.js', 'run', '-c', configFile], {
      cwd: projectDir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}
