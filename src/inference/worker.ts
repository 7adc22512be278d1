/**
 * Inference worker: owns the one ORT session. `session.run` blocks its thread for the whole
 * inference, so it lives here instead of on the main thread that serves MQTT and HTTP.
 * Requests are handled one at a time, in arrival order.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { cpus } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type MessagePort, parentPort, threadId, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.js';
import { normalizeProviders, sessionOptionsFor } from './session-options.js';
import type { ProviderAttempt, SessionSettings, TensorInfo } from './types.js';

const port: MessagePort = requireParentPort();
const post = (msg: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

class InitError extends Error {
  constructor(
    readonly kind: 'no-provider' | 'model',
    message: string,
  ) {
    super(message);
  }
}

interface Loaded {
  session: ort.InferenceSession;
  provider: string;
  fromCache: boolean;
}

const { settings } = workerData as WorkerInit;
const attempts: ProviderAttempt[] = [];
let loaded: Loaded | undefined;
let inputName = '';
let outputName = '';

try {
  const t0 = performance.now();
  loaded = await createSession(settings);
  const loadMs = performance.now() - t0;
  const input = describe(loaded.session, 'input', settings.inputName);
  const output = describe(loaded.session, 'output', settings.outputName);
  if (input.type !== 'float32') throw new InitError('model', `model input "${input.name}" is ${input.type}; only float32 inputs are supported`);
  inputName = input.name;
  outputName = output.name;
  const warmupMs = await warmUp(loaded.session, input);
  post({ type: 'ready', provider: loaded.provider, attempts, input, output, fromCache: loaded.fromCache, loadMs, warmupMs });
} catch (err) {
  await loaded?.session.release().catch(() => undefined);
  loaded = undefined;
  const kind = err instanceof InitError ? err.kind : 'model';
  post({ type: 'init-error', kind, message: (err as Error).message, attempts });
}

let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  queue = queue.then(() => handle(msg));
});

async function handle(msg: ToWorker): Promise<void> {
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
    if (!out || out.type !== 'float32') throw new Error(`output "${outputName}" is ${out?.type ?? 'missing'}, expected float32`);
    const data = out.data as Float32Array;
    // Transfer only a buffer the view owns entirely; otherwise copy the view's own bytes.
    const scores = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
    out.dispose();
    post({ type: 'result', id: msg.id, scores, inferenceMs }, [scores.buffer as ArrayBuffer]);
  } catch (err) {
    post({ type: 'run-error', id: msg.id, message: (err as Error).message });
  }
}

/** Tries the configured providers in order; the first that creates a session wins. */
async function createSession(s: SessionSettings): Promise<Loaded> {
  // A missing file is a model problem, not a reason to blame every provider in turn.
  if (!(await exists(s.modelPath))) throw new InitError('model', `model file not found: ${s.modelPath}`);
  const supported = new Set(ort.listSupportedBackends().map((b) => b.name.toLowerCase()));
  const providers = normalizeProviders(s.executionProviders);
  for (const provider of providers) {
    if (!supported.has(provider)) {
      attempts.push({ provider, ok: false, reason: 'not compiled into this onnxruntime-node build' });
      continue;
    }
    try {
      const { session, fromCache } = await createWithCache(s, provider);
      attempts.push({ provider, ok: true });
      return { session, provider, fromCache };
    } catch (err) {
      attempts.push({ provider, ok: false, reason: (err as Error).message.trim() });
    }
  }
  const tried = attempts.map((a) => `${a.provider}: ${a.reason}`).join('; ');
  const hint = providers.includes('cpu') ? '' : ' (add "cpu" to executionProviders as a last resort)';
  throw new InitError('no-provider', `no execution provider could load ${s.modelPath}${hint}: ${tried || 'none configured'}`);
}

/**
 * CPU sessions can start from a saved, already-optimized model (DESIGN §6: first Result ≤ 2 s).
 * The file name carries everything that makes it valid: model content, ORT version, provider, level.
 * Accelerator partitions cannot be saved this way, so other providers always load the original.
 */
async function createWithCache(s: SessionSettings, provider: string): Promise<{ session: ort.InferenceSession; fromCache: boolean }> {
  if (!s.optimizedModelCacheDir || provider !== 'cpu' || s.graphOptimizationLevel === 'disabled') {
    return { session: await ort.InferenceSession.create(s.modelPath, sessionOptionsFor(s, provider)), fromCache: false };
  }
  const hash = await sha256File(s.modelPath);
  // Level 'all' bakes in CPU-specific layouts (NCHWc), so the CPU model is part of the key too.
  const cpu = createHash('sha256').update(`${process.arch} ${cpus()[0]?.model ?? ''}`).digest('hex').slice(0, 8);
  const key = `${path.basename(s.modelPath, '.onnx')}-${hash.slice(0, 16)}-ort${ort.env.versions.node ?? 'x'}-${cpu}-${provider}-${s.graphOptimizationLevel}`;
  const cached = path.join(s.optimizedModelCacheDir, `${key}.onnx`);
  if (await exists(cached)) {
    try {
      // Already optimized: skip the optimizer, which is most of the load time.
      const options = sessionOptionsFor(s, provider, { graphOptimizationLevel: 'disabled' });
      return { session: await ort.InferenceSession.create(cached, options), fromCache: true };
    } catch {
      await rm(cached, { force: true }); // unreadable cache: rebuild it below
    }
  }
  await mkdir(s.optimizedModelCacheDir, { recursive: true });
  const tmp = `${cached}.tmp-${process.pid}-${threadId}`;
  try {
    const session = await ort.InferenceSession.create(s.modelPath, sessionOptionsFor(s, provider, { optimizedModelFilePath: tmp }));
    await rename(tmp, cached).catch(() => undefined); // a cache we cannot write is only slower
    return { session, fromCache: false };
  } finally {
    await rm(tmp, { force: true });
  }
}

function describe(session: ort.InferenceSession, kind: 'input' | 'output', wanted?: string): TensorInfo {
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
async function warmUp(session: ort.InferenceSession, input: TensorInfo): Promise<number> {
  // A symbolic batch dimension becomes 1; other symbolic dimensions leave nothing to warm up with.
  const dims = input.dims.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? 1 : NaN));
  if (dims.length === 0 || dims.some(Number.isNaN)) return 0;
  const size = dims.reduce((a, b) => a * b, 1);
  const t0 = performance.now();
  const out = await session.run({ [input.name]: new ort.Tensor('float32', new Float32Array(size), dims) }, [outputName]);
  for (const t of Object.values(out)) t.dispose();
  return performance.now() - t0;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

function requireParentPort(): MessagePort {
  if (!parentPort) throw new Error('worker.ts must run in a worker thread');
  return parentPort;
}
