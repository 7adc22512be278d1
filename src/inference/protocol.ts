/** Messages between InferenceEngine (main thread) and worker.ts. Internal to this folder. */
import type { EngineInfo, ProviderAttempt, SessionSettings } from './types.js';

export interface WorkerInit {
  settings: SessionSettings;
}

export type ToWorker =
  | { type: 'run'; id: number; data: Float32Array; dims: number[] }
  | { type: 'close' }
  /** Test hook: the worker throws an uncaught error between runs, as a real crash would. */
  | { type: 'crash' };

export type FromWorker =
  | ({ type: 'ready' } & EngineInfo)
  | { type: 'init-error'; kind: 'no-provider' | 'model' | 'runtime'; message: string; attempts: ProviderAttempt[] }
  | { type: 'result'; id: number; scores: Float32Array; inferenceMs: number }
  | { type: 'run-error'; id: number; message: string }
  | { type: 'closed' };
