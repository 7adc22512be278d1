// Types for toolchain.mjs (plain JavaScript, no build step), for the TypeScript tests that import it.
import type { ChildProcess, SpawnOptions } from 'node:child_process';

export const repoRoot: string;
export const DEBIAN_MIRROR: string;
export const DEBIAN_KEYRING: string;
export const DEBIAN_SUITES: string[];
export const QEMU_SUITE: string;
export const SYSROOT_PACKAGES: string[];
export const DEFAULT_QEMU_CPU: string;
export const NPM_CI_ARGS: string[];
export const BINFMT_NAME: string;

export class Arm64SetupError extends Error {
  constructor(step: string, reason: string);
  readonly step: string;
  readonly reason: string;
}

export interface Toolchain {
  cacheDir: string;
  qemu: string;
  qemuVersion: string;
  qemuPackage: string;
  sysroot: string;
  sysrootPackages: string[];
  nodeDir: string;
  nodeBin: string;
  nodeVersion: string;
  qemuCpu: string;
  /** Empty folder the namespace mounts its binfmt_misc on. */
  binfmtMount: string;
}

export interface ProbeResult {
  arch: string;
  child: string;
  node: string;
  execPath: string;
  cpus: number;
  cpuModel?: string;
  ms: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

type Log = (msg: string) => void;

export function defaultCacheDir(env?: NodeJS.ProcessEnv): string;
export function runStep(
  step: string,
  file: string,
  args: string[],
  opts?: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string },
): Promise<{ stdout: string; stderr: string }>;
export function prepareToolchain(opts?: { cacheDir?: string; log?: Log }): Promise<Toolchain>;
export function prepareProject(opts?: { root?: string; cacheDir?: string; log?: Log }): Promise<string>;
export function arm64Env(tc: Toolchain, env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
export function arm64Command(tc: Toolchain, argv: string[]): { file: string; args: string[] };
export function spawnArm64(tc: Toolchain, argv: string[], options?: SpawnOptions): ChildProcess;
export function runArm64(
  tc: Toolchain,
  argv: string[],
  opts?: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string },
): Promise<RunResult>;
export function explainNamespaceFailure(res: Partial<RunResult>): string;
export function probeNamespace(tc: Toolchain, opts?: { timeoutMs?: number }): Promise<ProbeResult>;
