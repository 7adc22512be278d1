/**
 * Node placement: which execution provider runs how many of the session's nodes, and which op types an
 * accelerator left to the CPU — the first thing a user with an NPU or GPU asks. ONNX Runtime exposes it
 * to JavaScript only through its profiler: one profiled run lists every node the session executes
 * (after fusion and partitioning) with its provider. The worker profiles its warm-up run, then stops
 * profiling (docs/ARCHITECTURE.md, "Execution providers").
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface Placement {
  /** provider → nodes it runs, e.g. {"webgpu": 361, "cpu": 96} */
  nodes: Record<string, number>;
  /** Op types the CPU runs while another provider runs the rest (empty when all on one provider). */
  cpuOps: Record<string, number>;
  /** Copies between the CPU and a device per run (MemcpyToHost/FromHost): the price of a split graph. */
  copies: number;
}

interface ProfileEvent {
  cat?: string;
  name?: string;
  args?: { provider?: string; op_name?: string; node_index?: string | number };
}

const COPY_OPS = new Set(['MemcpyToHost', 'MemcpyFromHost']);

/** "WebGpuExecutionProvider" → "webgpu", "CPUExecutionProvider" → "cpu", as the config names them. */
export function providerShortName(ortName: string): string {
  return ortName.replace(/ExecutionProvider$/, '').toLowerCase();
}

/** Counts each node once (a profile of several runs repeats them) by provider; copies apart. */
export function placementFromProfile(events: readonly ProfileEvent[]): Placement {
  const seen = new Set<string>();
  const nodes: Record<string, number> = {};
  const opsByProvider: Record<string, Record<string, number>> = {};
  let copies = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.provider) continue;
    const key = String(e.args.node_index ?? e.name);
    if (seen.has(key)) continue;
    seen.add(key);
    const op = e.args.op_name ?? '?';
    if (COPY_OPS.has(op)) {
      copies++;
      continue;
    }
    const provider = providerShortName(e.args.provider);
    nodes[provider] = (nodes[provider] ?? 0) + 1;
    const ops = (opsByProvider[provider] ??= {});
    ops[op] = (ops[op] ?? 0) + 1;
  }
  const split = Object.keys(nodes).length > 1;
  return { nodes, cpuOps: split ? (opsByProvider.cpu ?? {}) : {}, copies };
}

/** One line for logs and doctor: "webgpu 361, cpu 96; on cpu: QuantizeLinear 96; 191 copies per run". */
export function formatPlacement(p: Placement): string {
  const nodes = Object.entries(p.nodes)
    .sort((a, b) => b[1] - a[1])
    .map(([provider, n]) => `${provider} ${n}`)
    .join(', ');
  const ops = Object.entries(p.cpuOps)
    .sort((a, b) => b[1] - a[1])
    .map(([op, n]) => `${op} ${n}`)
    .join(', ');
  return `${nodes}${ops ? `; on cpu: ${ops}` : ''}${p.copies ? `; ${p.copies} copies per run` : ''}`;
}

/** A scratch folder for one profile; the caller reads it with readProfile and removes it. */
export function profileDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'inceptiond-profile-'));
}

/** Parses the one profile ORT wrote in `dir` (`<prefix>_<timestamp>.json`) and removes the folder. */
export async function readProfile(dir: string): Promise<Placement> {
  try {
    const files = (await readdir(dir)).filter((f) => f.endsWith('.json'));
    if (files.length !== 1) throw new Error(`expected one ONNX Runtime profile in ${dir}, found ${files.length}`);
    return placementFromProfile(JSON.parse(await readFile(path.join(dir, files[0]!), 'utf8')) as ProfileEvent[]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
