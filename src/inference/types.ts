import type { Placement } from './placement.js';
import type { RuntimeInfo } from './runtime.js';

/** What the preprocessor produces and the inference worker consumes. */
export interface InputTensor {
  data: Float32Array;
  /** e.g. [1, 3, 224, 224] for NCHW */
  dims: number[];
}

export interface InferenceOutput {
  /** First graph output (or the manifest's named output), flattened. */
  scores: Float32Array;
  /** Wall time of session.run inside the worker. */
  inferenceMs: number;
  /**
   * The input tensor's array, handed back by the worker after the run (transferred both ways, never
   * copied) so the caller can preprocess the next frame into it instead of allocating 600 KB per frame.
   */
  input?: Float32Array;
}

export interface SessionSettings {
  /** ONNX file to load. */
  modelPath: string;
  /** Input and output names from the manifest (first graph input/output when absent). */
  inputName?: string;
  outputName?: string;
  /** Ordered preference, e.g. ["qnn", "webgpu", "cpu"]. */
  executionProviders: string[];
  /** intra-op threads; 0 = ORT default. */
  threads: number;
  allowSpinning: boolean;
  graphOptimizationLevel: 'disabled' | 'basic' | 'extended' | 'all';
  /** Where ORT may save the optimized model for a faster next start (optional). */
  optimizedModelCacheDir?: string;
  /** Where an accelerator's compiled graph (ORT EP context) is kept between starts (optional). */
  epContextCacheDir?: string;
  /** Per provider, options handed to ORT as given (numbers as decimal text). */
  providerOptions?: Record<string, Record<string, string | number | string[]>>;
  /** Nodes an accelerator cannot take may run on the CPU. Default true. */
  cpuFallback?: boolean;
  /** Another onnxruntime-node build (a folder, main file or package name); '' or absent = the bundled one. */
  runtime?: string;
  /**
   * Profile a CPU session's warm-up for the placement report (default true). On the CPU the report
   * only counts the nodes after fusion, and a profiled session has to be reopened before it runs frames
   * (worker.ts), which costs the daemon ~5 MB: the daemon turns it off. Accelerators are always profiled.
   */
  profileCpuPlacement?: boolean;
}

/** Why a provider was not used, for the log and `doctor`. */
export interface ProviderAttempt {
  provider: string;
  ok: boolean;
  reason?: string;
  /** What the provider's native code printed while failing (Vulkan loader, Dawn, ORT), if anything. */
  native?: string[];
}

/** A graph input or output as the loaded session reports it. */
export interface TensorInfo {
  name: string;
  /** Element type, e.g. "float32". */
  type: string;
  /** Numbers, or strings for symbolic dimensions (e.g. "N"); empty when unknown. */
  dims: Array<number | string>;
}

/** What the engine settled on when its worker came up. */
export interface EngineInfo {
  provider: string;
  /** The onnxruntime-node build the worker loaded. */
  runtime: RuntimeInfo;
  attempts: ProviderAttempt[];
  input: TensorInfo;
  output: TensorInfo;
  /** The session was loaded from the optimized-model cache. */
  fromCache: boolean;
  /** Session creation (including provider attempts) and the warm-up run, in the worker. */
  loadMs: number;
  warmupMs: number;
  /** Nodes per provider from the profiled warm-up run (absent if the profile could not be read). */
  placement?: Placement;
}
