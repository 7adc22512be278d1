/** Messages between InferenceEngine (main thread) and worker.ts. Internal to this folder. */
import type { EngineInfo, ProviderAttempt, SessionSettings } from './types.js';

export interface WorkerInit {
  settings: SessionSettings;
}

export type ToWorker =
  | { type: 'run'; id: number; data: Float32Array; dims: number[] }
  | { type: 'close' }
  /** Answered at once, between or during runs: the worker's V8 heap (its memory is invisible from the main thread). */
  | { type: 'heap'; id: number }
  /** Test hook: the worker throws an uncaught error between runs, as a real crash would. */
  | { type: 'crash' };

export type FromWorker =
  | ({ type: 'ready' } & EngineInfo)
  | { type: 'init-error'; kind: 'no-provider' | 'model' | 'runtime'; message: string; attempts: ProviderAttempt[] }
  | { type: 'result'; id: number; scores: Float32Array; inferenceMs: number; input?: Float32Array }
  | { type: 'run-error'; id: number; message: string }
  | { type: 'heap'; id: number; heap: WorkerHeap }
  | { type: 'closed' };

/** The worker isolate's V8 heap, in bytes (v8.getHeapStatistics and the young generation's spaces). */
export interface WorkerHeap {
  totalHeapSize: number;
  usedHeapSize: number;
  heapSizeLimit: number;
  mallocedMemory: number;
  externalMemory: number;
  /** new_space + new_large_object_space, committed. */
  youngGenerationSize: number;
}
