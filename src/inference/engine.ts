import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import {
  EngineClosedError,
  InferenceRunError,
  InvalidTensorError,
  ModelLoadError,
  NoExecutionProviderError,
  RestartLimitError,
  WorkerCrashedError,
} from './errors.js';
import type { FromWorker, ToWorker, WorkerHeap, WorkerInit } from './protocol.js';
import { formatPlacement } from './placement.js';
import { RuntimeLoadError } from './runtime.js';
import type { EngineInfo, InferenceOutput, InputTensor, ProviderAttempt, SessionSettings, TensorInfo } from './types.js';

export interface EngineOptions {
  /** At most this many worker restarts within `restartWindowMs`; beyond, runs fail fast. Default 3. */
  maxRestarts?: number;
  /** Default 60 000. */
  restartWindowMs?: number;
  /** How long `close()` waits for queued runs and the session release before terminating. Default 5000. */
  closeTimeoutMs?: number;
}

interface Pending {
  resolve: (out: InferenceOutput) => void;
  reject: (err: Error) => void;
  /** performance.now() when it was sent to the worker. */
  sentAt: number;
}

/** Test hook: kills the worker as a native crash would. Not part of the public API (not in index.ts). */
export const crashWorkerForTest = Symbol('crashWorkerForTest');

/**
 * Main-thread handle on the inference worker (one ORT session). `run` transfers the tensor's buffer to
 * the worker (the caller's array is detached afterwards) and resolves with the scores, in request order.
 * If the worker dies, pending runs reject with WorkerCrashedError and the next `run` starts a new
 * worker (at most `maxRestarts` per window).
 */
export class InferenceEngine {
  #worker: Worker | undefined;
  #starting: Promise<void> | undefined;
  #info: EngineInfo;
  #pending = new Map<number, Pending>(); // insertion order = request order
  #nextId = 0;
  #restartTimes: number[] = [];
  #restarts = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  #heapWaiters = new Map<number, (heap: WorkerHeap) => void>();

  private constructor(
    private readonly settings: SessionSettings,
    private readonly logger: Logger,
    private readonly options: Required<EngineOptions>,
    worker: Worker,
    info: EngineInfo,
  ) {
    this.#worker = worker;
    this.#info = info;
  }

  /** Starts the worker, picks the execution provider, loads the model and warms it up. */
  static async create(settings: SessionSettings, logger: Logger, options: EngineOptions = {}): Promise<InferenceEngine> {
    const opts: Required<EngineOptions> = {
      maxRestarts: options.maxRestarts ?? 3,
      restartWindowMs: options.restartWindowMs ?? 60_000,
      closeTimeoutMs: options.closeTimeoutMs ?? 5_000,
    };
    let engine: InferenceEngine | undefined;
    const { worker, info } = await spawnWorker(
      settings,
      logger,
      (w, msg) => engine?.onMessage(w, msg),
      (w, err) => engine?.onExit(w, err),
    );
    engine = new InferenceEngine(settings, logger, opts, worker, info);
    return engine;
  }

  get provider(): string {
    return this.#info.provider;
  }
  get attempts(): readonly ProviderAttempt[] {
    return this.#info.attempts;
  }
  get input(): TensorInfo {
    return this.#info.input;
  }
  get output(): TensorInfo {
    return this.#info.output;
  }
  get info(): EngineInfo {
    return this.#info;
  }
  /** Worker restarts since create (for metrics). */
  get restarts(): number {
    return this.#restarts;
  }
  /** Runs sent to the worker and not yet answered. */
  get pending(): number {
    return this.#pending.size;
  }

  /** How long the oldest unanswered run has been in the worker (0 when none): a hung worker shows here. */
  get oldestPendingMs(): number {
    const first = this.#pending.values().next();
    return first.done ? 0 : performance.now() - first.value.sentAt;
  }

  run(tensor: InputTensor): Promise<InferenceOutput> {
    if (this.#closed) return Promise.reject(new EngineClosedError());
    try {
      this.validate(tensor);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // Posting synchronously when the worker is up keeps request order without extra bookkeeping;
    // callers that arrive during a restart continue in the order they awaited it.
    if (this.#worker) return this.send(this.#worker, tensor);
    return this.restart().then(() => {
      if (this.#closed || !this.#worker) throw new EngineClosedError();
      return this.send(this.#worker, tensor);
    });
  }

  /** The worker's V8 heap (answered at once, even during a run); undefined without a worker. */
  workerHeap(): Promise<WorkerHeap | undefined> {
    const worker = this.#worker;
    if (!worker) return Promise.resolve(undefined);
    const id = ++this.#nextId;
    return new Promise((resolve) => {
      const onExit = () => {
        this.#heapWaiters.delete(id);
        resolve(undefined);
      };
      worker.once('exit', onExit);
      this.#heapWaiters.set(id, (heap) => {
        worker.off('exit', onExit);
        resolve(heap);
      });
      worker.postMessage({ type: 'heap', id } satisfies ToWorker);
    });
  }

  /** Lets queued runs finish, releases the session and ends the worker. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.doClose();
    return this.#closing;
  }

  /** Makes the worker die from an uncaught error after the requests already sent to it. */
  [crashWorkerForTest](): Promise<void> {
    const worker = this.#worker;
    if (!worker) return Promise.resolve();
    return new Promise((resolve) => {
      worker.once('exit', () => resolve());
      worker.postMessage({ type: 'crash' } satisfies ToWorker);
    });
  }

  private send(worker: Worker, tensor: InputTensor): Promise<InferenceOutput> {
    const id = ++this.#nextId;
    let data = tensor.data;
    // Transfer (zero copy) only a buffer the array owns entirely; a view into a larger buffer is
    // copied first, or the transfer would detach (and the clone would copy) the whole buffer.
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength || !(data.buffer instanceof ArrayBuffer)) {
      data = data.slice();
    }
    const msg: ToWorker = { type: 'run', id, data, dims: [...tensor.dims] };
    return new Promise<InferenceOutput>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, sentAt: performance.now() });
      worker.postMessage(msg, [data.buffer as ArrayBuffer]);
    });
  }

  private validate(tensor: InputTensor): void {
    const { data, dims } = tensor;
    if (!(data instanceof Float32Array)) throw new InvalidTensorError('tensor data must be a Float32Array');
    if (data.buffer.byteLength === 0 && data.length === 0 && dims.length > 0) {
      throw new InvalidTensorError('tensor data is empty or was already transferred');
    }
    const size = dims.reduce((a, b) => a * b, 1);
    if (!dims.every((d) => Number.isInteger(d) && d > 0) || size !== data.length) {
      throw new InvalidTensorError(`tensor has ${data.length} values, dims [${dims.join(', ')}] need ${size}`);
    }
    const expected = this.#info.input.dims;
    if (expected.length > 0) {
      const fits = expected.length === dims.length && expected.every((d, i) => typeof d !== 'number' || d <= 0 || d === dims[i]);
      if (!fits)
        throw new InvalidTensorError(
          `tensor dims [${dims.join(', ')}] do not fit model input "${this.#info.input.name}" [${expected.join(', ')}]`,
        );
    }
  }

  private onMessage(worker: Worker, msg: FromWorker): void {
    if (worker !== this.#worker) return;
    if (msg.type === 'heap') {
      this.#heapWaiters.get(msg.id)?.(msg.heap);
      this.#heapWaiters.delete(msg.id);
      return;
    }
    if (msg.type === 'result' || msg.type === 'run-error') {
      const pending = this.#pending.get(msg.id);
      if (!pending) return;
      this.#pending.delete(msg.id);
      if (msg.type === 'result')
        pending.resolve({ scores: msg.scores, inferenceMs: msg.inferenceMs, ...(msg.input ? { input: msg.input } : {}) });
      else pending.reject(new InferenceRunError(`inference failed: ${msg.message}`));
    }
  }

  private onExit(worker: Worker, err: Error | undefined): void {
    if (worker !== this.#worker) return;
    this.#worker = undefined;
    if (this.#closed) {
      this.rejectAll(new EngineClosedError());
      return;
    }
    const crash = new WorkerCrashedError(`inference worker died${err ? `: ${err.message}` : ''}`);
    this.logger.error({ err: crash, pending: this.#pending.size }, 'inference worker died; it restarts on the next run');
    this.rejectAll(crash);
  }

  private rejectAll(err: Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
  }

  private restart(): Promise<void> {
    this.#starting ??= this.doRestart().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting;
  }

  private async doRestart(): Promise<void> {
    const now = Date.now();
    this.#restartTimes = this.#restartTimes.filter((t) => now - t < this.options.restartWindowMs);
    if (this.#restartTimes.length >= this.options.maxRestarts) {
      throw new RestartLimitError(
        `inference worker restarted ${this.#restartTimes.length} times in ${this.options.restartWindowMs} ms; not restarting yet`,
      );
    }
    this.#restartTimes.push(now);
    this.#restarts++;
    this.logger.warn({ restarts: this.#restarts }, 'restarting inference worker');
    const { worker, info } = await spawnWorker(
      this.settings,
      this.logger,
      (w, msg) => this.onMessage(w, msg),
      (w, err) => this.onExit(w, err),
    );
    if (this.#closed) {
      await worker.terminate();
      throw new EngineClosedError();
    }
    this.#worker = worker;
    this.#info = info;
  }

  private async doClose(): Promise<void> {
    this.#closed = true;
    await this.#starting?.catch(() => undefined);
    const worker = this.#worker;
    if (!worker) return;
    const closed = new Promise<void>((resolve) => {
      const onMessage = (msg: FromWorker) => {
        if (msg.type === 'closed') resolve();
      };
      worker.on('message', onMessage);
      worker.once('exit', () => resolve());
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), this.options.closeTimeoutMs);
    });
    worker.postMessage({ type: 'close' } satisfies ToWorker);
    const timedOut = await Promise.race([closed.then(() => false), timeout]);
    clearTimeout(timer);
    this.#worker = undefined;
    if (timedOut) {
      // Last resort: terminating a worker inside session.run can abort the whole process
      // (onnxruntime-node throws a native error while the thread is torn down).
      this.logger.error({ timeoutMs: this.options.closeTimeoutMs }, 'inference worker did not close in time; terminating it');
    }
    await worker.terminate();
    this.rejectAll(new EngineClosedError());
  }
}

/**
 * The worker's JavaScript is small (about 7 MB of heap: messages in, scores out; tensors live outside
 * the V8 heap), so its V8 heap gets small bounds instead of the process's defaults (a 16 MB semi-space
 * and an old generation sized for the machine). A worker that outgrows them dies with
 * ERR_WORKER_OUT_OF_MEMORY and is restarted like any crashed worker, instead of growing the daemon.
 */
export const WORKER_LIMITS = { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 } as const;

/** Starts a worker and waits for its ready/init-error message; logs the provider choice. */
async function spawnWorker(
  settings: SessionSettings,
  logger: Logger,
  onMessage: (worker: Worker, msg: FromWorker) => void,
  onExit: (worker: Worker, err: Error | undefined) => void,
): Promise<{ worker: Worker; info: EngineInfo }> {
  const worker = new Worker(workerEntry(), { workerData: { settings } satisfies WorkerInit, resourceLimits: WORKER_LIMITS });
  let lastError: Error | undefined;
  let loading = true;
  const ready = new Promise<EngineInfo>((resolve, reject) => {
    worker.on('message', (msg: FromWorker) => {
      if (!loading) return onMessage(worker, msg);
      if (msg.type === 'ready') {
        const { type: _, ...info } = msg;
        resolve(info);
      } else if (msg.type === 'init-error') {
        logAttempts(logger, msg.attempts);
        reject(
          msg.kind === 'no-provider'
            ? new NoExecutionProviderError(msg.message, msg.attempts)
            : msg.kind === 'runtime'
              ? new RuntimeLoadError(msg.message)
              : new ModelLoadError(msg.message),
        );
      }
    });
    worker.on('error', (err) => {
      lastError = err;
    });
    worker.once('exit', (code) => {
      if (!loading) return onExit(worker, lastError);
      reject(new WorkerCrashedError(`inference worker exited (code ${code}) while loading${lastError ? `: ${lastError.message}` : ''}`));
    });
  });
  let info: EngineInfo;
  try {
    info = await ready;
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  loading = false;
  logAttempts(logger, info.attempts);
  logger.info(
    {
      provider: info.provider,
      runtime: { version: info.runtime.version, path: info.runtime.path },
      placement: info.placement,
      input: info.input,
      output: info.output,
      fromCache: info.fromCache,
      loadMs: round(info.loadMs),
      warmupMs: round(info.warmupMs),
    },
    `inference session ready on ${info.provider}${info.placement ? `: ${formatPlacement(info.placement)}` : ''}`,
  );
  return { worker, info };
}

function logAttempts(logger: Logger, attempts: ProviderAttempt[]): void {
  for (const a of attempts) {
    if (!a.ok)
      logger.warn({ provider: a.provider, reason: a.reason, native: a.native }, `execution provider ${a.provider} not used: ${a.reason}`);
  }
}

const round = (ms: number) => Math.round(ms * 10) / 10;

/**
 * dist/: the compiled worker.js beside this file. src/ (vitest): worker.ts, loaded through a small
 * TypeScript loader registered inside the worker, so tests never depend on a stale build.
 */
function workerEntry(): URL {
  const js = new URL('./worker.js', import.meta.url);
  if (existsSync(fileURLToPath(js))) return js;
  const ts = new URL('./worker.ts', import.meta.url);
  const loader = new URL('./dev-ts-loader.mjs', import.meta.url);
  if (!existsSync(fileURLToPath(ts)) || !existsSync(fileURLToPath(loader))) {
    throw new Error(`inference worker not found beside ${fileURLToPath(import.meta.url)}`);
  }
  const boot = `import { register } from 'node:module'; register(${JSON.stringify(loader.href)}); await import(${JSON.stringify(ts.href)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(boot)}`);
}
