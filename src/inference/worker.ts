/**
 * Inference worker: owns the one ORT session. `session.run` blocks its thread for the whole
 * inference, so it lives here instead of on the main thread that serves MQTT and HTTP.
 * Requests are handled one at a time, in arrival order.
 */
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import { type MessagePort, parentPort, threadId, workerData } from 'node:worker_threads';
import type * as Ort from 'onnxruntime-node';
import { ortReason } from './errors.js';
import type { FromWorker, ToWorker, WorkerHeap, WorkerInit } from './protocol.js';
import { profileDir, readProfile, type Placement } from './placement.js';
import { probeProvider } from './provider-probe.js';
import { epContextFile, epContextPrefix, optimizedModelFile, staleOptimizedModels } from './session-cache.js';
import { loadRuntime, type OrtModule, type RuntimeInfo } from './runtime.js';
import { normalizeProviders, sessionOptionsFor } from './session-options.js';
import type { ProviderAttempt, SessionSettings, TensorInfo } from './types.js';
import { fileSha256, INFERENCE_THREAD_NAME, nameCurrentThread, pathExists } from '../util/index.js';

const port: MessagePort = requireParentPort();
// Before ORT is loaded: the threads it starts from here inherit the name, which is how the metrics
// tell inference CPU from the rest and how `top -H` shows them (util/threads.ts).
nameCurrentThread(INFERENCE_THREAD_NAME);
const post = (msg: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

class InitError extends Error {
  constructor(
    readonly kind: 'no-provider' | 'model' | 'runtime',
    message: string,
  ) {
    super(message);
  }
}

interface Loaded {
  session: Ort.InferenceSession;
  provider: string;
  fromCache: boolean;
  /**
   * The folder the session profiles its first run (the warm-up) into, for the placement report; absent
   * when it is not profiled (SessionSettings.profileCpuPlacement).
   */
  profile?: string;
}

const { settings } = workerData as WorkerInit;
const attempts: ProviderAttempt[] = [];
let loaded: Loaded | undefined;
let inputName = '';
let outputName = '';
// Only this thread loads ONNX Runtime, and it loads the configured build (inference.runtime).
let ort: OrtModule;
let runtime: RuntimeInfo;

try {
  const t0 = performance.now();
  try {
    ({ ort, info: runtime } = loadRuntime(settings.runtime ?? ''));
  } catch (err) {
    throw new InitError('runtime', (err as Error).message);
  }
  loaded = await createSession(settings);
  const loadMs = performance.now() - t0;
  const input = describe(loaded.session, 'input', settings.inputName);
  const output = describe(loaded.session, 'output', settings.outputName);
  if (input.type !== 'float32')
    throw new InitError('model', `model input "${input.name}" is ${input.type}; only float32 inputs are supported`);
  inputName = input.name;
  outputName = output.name;
  let warmupMs = await warmUp(loaded.session, input);
  let placement: Placement | undefined;
  if (loaded.profile) {
    placement = await placementOf(loaded.session, loaded.profile);
    loaded.session = await reopenWithoutProfiling(loaded, settings);
    warmupMs += await warmUp(loaded.session, input);
  }
  post({
    type: 'ready',
    provider: loaded.provider,
    runtime,
    attempts,
    input,
    output,
    fromCache: loaded.fromCache,
    loadMs,
    warmupMs,
    placement,
  });
} catch (err) {
  await loaded?.session.release().catch(() => undefined);
  if (loaded?.profile) await rm(loaded.profile, { recursive: true, force: true });
  loaded = undefined;
  const kind = err instanceof InitError ? err.kind : 'model';
  post({ type: 'init-error', kind, message: (err as Error).message, attempts });
}

let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  if (msg.type === 'heap') post({ type: 'heap', id: msg.id, heap: heapNow() });
  else queue = queue.then(() => handle(msg));
});

function heapNow(): WorkerHeap {
  const h = v8.getHeapStatistics();
  const young = v8
    .getHeapSpaceStatistics()
    .filter((s) => s.space_name === 'new_space' || s.space_name === 'new_large_object_space')
    .reduce((n, s) => n + s.space_size, 0);
  return {
    totalHeapSize: h.total_heap_size,
    usedHeapSize: h.used_heap_size,
    heapSizeLimit: h.heap_size_limit,
    mallocedMemory: h.malloced_memory,
    externalMemory: h.external_memory,
    youngGenerationSize: young,
  };
}

async function handle(msg: Exclude<ToWorker, { type: 'heap' }>): Promise<void> {
  if (msg.type === 'close') {
    await loaded?.session.release().catch(() => undefined);
    loaded = undefined;
    post({ type: 'closed' });
    // Leave on our own, between runs: terminate() from outside during a native run aborts the process.
    port.close();
    return;
  }
  if (msg.type === 'crash') {
    setImmediate(() => {
      throw new Error('simulated worker crash (test hook)');
    });
    return new Promise(() => undefined); // handle nothing after the crash
  }
  if (!loaded) {
    post({ type: 'run-error', id: msg.id, message: 'no session loaded' });
    return;
  }
  try {
    const feeds = { [inputName]: new ort.Tensor('float32', msg.data, msg.dims) };
    const t0 = performance.now();
    const results = await loaded.session.run(feeds, [outputName]);
    const inferenceMs = performance.now() - t0;
    const out = results[outputName];
    if (out?.type !== 'float32') throw new Error(`output "${outputName}" is ${out?.type ?? 'missing'}, expected float32`);
    const data = out.data as Float32Array;
    // Transfer only a buffer the view owns entirely; otherwise copy the view's own bytes.
    const scores = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
    out.dispose();
    // The input goes back too, for the next frame (the session is done with it once run resolves).
    const input = msg.data;
    const transfer = [scores.buffer as ArrayBuffer];
    const returnInput = input.byteOffset === 0 && input.byteLength === input.buffer.byteLength && input.buffer !== scores.buffer;
    if (returnInput) transfer.push(input.buffer as ArrayBuffer);
    post({ type: 'result', id: msg.id, scores, inferenceMs, ...(returnInput ? { input } : {}) }, transfer);
  } catch (err) {
    post({ type: 'run-error', id: msg.id, message: (err as Error).message });
  }
}

/** Tries the configured providers in order; the first that creates a session wins. */
async function createSession(s: SessionSettings): Promise<Loaded> {
  // A missing file is a model problem, not a reason to blame every provider in turn.
  if (!(await pathExists(s.modelPath))) throw new InitError('model', `model file not found: ${s.modelPath}`);
  const supported = new Set(ort.listSupportedBackends().map((b) => b.name.toLowerCase()));
  const providers = normalizeProviders(s.executionProviders);
  for (const provider of providers) {
    if (!supported.has(provider)) {
      attempts.push({ provider, ok: false, reason: 'not compiled into this onnxruntime-node build' });
      continue;
    }
    if (provider !== 'cpu') {
      const probe = await probeProvider(s, provider);
      if (!probe.ok) {
        attempts.push({ provider, ok: false, reason: probe.reason ?? 'failed', ...(probe.native ? { native: probe.native } : {}) });
        continue;
      }
    }
    const profile = provider !== 'cpu' || s.profileCpuPlacement !== false ? await profileDir() : undefined;
    try {
      const profileFilePrefix = profile && path.join(profile, 'warmup');
      const { session, fromCache } =
        provider === 'cpu' ? await createCpuSession(s, profileFilePrefix) : await createAcceleratedSession(s, provider, profileFilePrefix);
      attempts.push({ provider, ok: true });
      return { session, provider, fromCache, ...(profile ? { profile } : {}) };
    } catch (err) {
      if (profile) await rm(profile, { recursive: true, force: true });
      attempts.push({ provider, ok: false, reason: ortReason((err as Error).message) });
    }
  }
  const tried = attempts.map((a) => `${a.provider}: ${a.reason}`).join('; ');
  const hint = providers.includes('cpu') ? '' : ' (add "cpu" to executionProviders as a last resort)';
  throw new InitError('no-provider', `no execution provider could load ${s.modelPath}${hint}: ${tried || 'none configured'}`);
}

type Created = { session: Ort.InferenceSession; fromCache: boolean };

/**
 * CPU sessions can start from a saved, already-optimized model (first Result within 2 s of a restart).
 * The file name carries everything that makes it valid: model content, ORT version, CPU, level.
 */
async function createCpuSession(s: SessionSettings, profileFilePrefix?: string): Promise<Created> {
  if (!s.optimizedModelCacheDir || s.graphOptimizationLevel === 'disabled') {
    return {
      session: await ort.InferenceSession.create(s.modelPath, sessionOptionsFor(s, 'cpu', { profileFilePrefix })),
      fromCache: false,
    };
  }
  const cached = optimizedModelFile(s.optimizedModelCacheDir, s, await fileSha256(s.modelPath), runtime.version);
  if (await pathExists(cached)) {
    try {
      // Already optimized: skip the optimizer, which is most of the load time.
      const options = sessionOptionsFor(s, 'cpu', { graphOptimizationLevel: 'disabled', profileFilePrefix });
      const session = await ort.InferenceSession.create(cached, options);
      const now = new Date();
      await utimes(cached, now, now).catch(() => undefined); // last use, for the pruning below
      return { session, fromCache: true };
    } catch {
      await rm(cached, { force: true }); // unreadable cache: rebuild it below
    }
  }
  const tmp = `${cached}.tmp-${process.pid}-${threadId}`;
  // A session made only to run the optimizer and save its graph, then released unrun: the one that ran
  // the optimizer kept ~14 MB more resident than one loaded from its output (a first start's daemon held
  // 152-158 MB against 143-146 after a restart), so the frames go to the one a restart would load.
  let written = false;
  try {
    await mkdir(s.optimizedModelCacheDir, { recursive: true });
    const optimizer = await ort.InferenceSession.create(
      s.modelPath,
      sessionOptionsFor(s, 'cpu', { optimizedModelFilePath: tmp, optimizeOnly: true }),
    );
    await optimizer.release();
    await rename(tmp, cached);
    written = true;
  } catch {
    // no cache (an unwritable folder; a model ORT refuses fails again below, with its own message)
  } finally {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
  if (written) {
    await pruneOptimizedModels(s.optimizedModelCacheDir, cached);
    try {
      const options = sessionOptionsFor(s, 'cpu', { graphOptimizationLevel: 'disabled', profileFilePrefix });
      return { session: await ort.InferenceSession.create(cached, options), fromCache: false };
    } catch {
      await rm(cached, { force: true }); // what it just wrote does not load: optimize again below
    }
  }
  // A cache that cannot be written or read back is only slower.
  return { session: await ort.InferenceSession.create(s.modelPath, sessionOptionsFor(s, 'cpu', { profileFilePrefix })), fromCache: false };
}

/**
 * A compiling accelerator (QNN, VSINPU …) turns the graph into its own binary at session creation,
 * which can take minutes on an NPU. ORT's EP context (`ep.context_*`) saves that binary inside an ONNX
 * file; loading that file skips the compilation. Keyed like the CPU cache (model content, runtime,
 * provider and its options), so a changed model or option compiles again. Providers that compile
 * nothing (WebGPU) write no file and are simply loaded from the model each time.
 */
async function createAcceleratedSession(s: SessionSettings, provider: string, profileFilePrefix?: string): Promise<Created> {
  const create = (file: string, over: Parameters<typeof sessionOptionsFor>[2] = {}) =>
    ort.InferenceSession.create(file, sessionOptionsFor(s, provider, { profileFilePrefix, ...over }));
  if (!s.epContextCacheDir) return { session: await create(s.modelPath), fromCache: false };
  const cached = epContextFile(s.epContextCacheDir, s, provider, await fileSha256(s.modelPath), runtime.version);
  if (await pathExists(cached)) {
    try {
      return { session: await create(cached), fromCache: true };
    } catch {
      await rm(cached, { force: true }); // stale or unreadable: compile again below
    }
  }
  await mkdir(s.epContextCacheDir, { recursive: true });
  const tmp = `${cached}.tmp-${process.pid}-${threadId}.onnx`;
  try {
    const session = await create(s.modelPath, { epContextFile: tmp });
    if (await pathExists(tmp)) {
      await rename(tmp, cached).catch(() => undefined);
      await pruneContexts(s.epContextCacheDir, epContextPrefix(s, provider), cached);
    }
    return { session, fromCache: false };
  } finally {
    await rm(tmp, { force: true });
  }
}

async function pruneOptimizedModels(dir: string, keep: string): Promise<void> {
  const files: { name: string; usedMs: number }[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const info = await stat(path.join(dir, name)).catch(() => undefined);
    if (info?.isFile()) files.push({ name, usedMs: info.mtimeMs });
  }
  for (const name of staleOptimizedModels(files, path.basename(keep))) await rm(path.join(dir, name), { force: true });
}

/** Context files of the same model name and provider but another model version or option set. */
async function pruneContexts(dir: string, stem: string, keep: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith(stem) && name.endsWith('_ctx.onnx') && path.join(dir, name) !== keep) {
      await rm(path.join(dir, name), { force: true });
    }
  }
}

/**
 * A session created with profiling keeps costing memory on every run after endProfiling (about 1 KB
 * per run, measured: RSS +0.65 MB per 1000 Results, linear over 30 000), so the profiled session only
 * serves the warm-up and the placement report; the daemon runs a fresh one, created without profiling
 * from the cache the first creation wrote (optimized model or EP context), so the second load is the
 * fast one. The first is released before, so the two never hold memory together.
 */
async function reopenWithoutProfiling(l: Loaded, s: SessionSettings): Promise<Ort.InferenceSession> {
  await l.session.release();
  const { session } = l.provider === 'cpu' ? await createCpuSession(s) : await createAcceleratedSession(s, l.provider);
  return session;
}

/** Ends the warm-up's profile and reads the placement from it; a failure here costs only the report. */
async function placementOf(session: Ort.InferenceSession, profile: string): Promise<Placement | undefined> {
  try {
    await session.endProfiling();
    return await readProfile(profile);
  } catch {
    await rm(profile, { recursive: true, force: true });
    return undefined;
  }
}

function describe(session: Ort.InferenceSession, kind: 'input' | 'output', wanted?: string): TensorInfo {
  const names = kind === 'input' ? session.inputNames : session.outputNames;
  const name = wanted ?? names[0];
  if (name === undefined || !names.includes(name)) {
    throw new InitError('model', `model has no ${kind} "${wanted ?? ''}" (it has: ${names.join(', ') || 'none'})`);
  }
  const meta = (kind === 'input' ? session.inputMetadata : session.outputMetadata).find((m) => m.name === name);
  if (!meta?.isTensor) return { name, type: 'unknown', dims: [] };
  return { name, type: meta.type, dims: [...meta.shape] };
}

/** One run with zeros so the first frame does not pay for lazy allocation and kernel selection. */
async function warmUp(session: Ort.InferenceSession, input: TensorInfo): Promise<number> {
  // A symbolic batch dimension becomes 1; other symbolic dimensions leave nothing to warm up with.
  const dims = input.dims.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? 1 : NaN));
  if (dims.length === 0 || dims.some(Number.isNaN)) return 0;
  const size = dims.reduce((a, b) => a * b, 1);
  const t0 = performance.now();
  const out = await session.run({ [input.name]: new ort.Tensor('float32', new Float32Array(size), dims) }, [outputName]);
  for (const t of Object.values(out)) t.dispose();
  return performance.now() - t0;
}

function requireParentPort(): MessagePort {
  if (!parentPort) throw new Error('worker.ts must run in a worker thread');
  return parentPort;
}
