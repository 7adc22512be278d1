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
}

/** Why a provider was not used, for the log and `doctor`. */
export interface ProviderAttempt {
  provider: string;
  ok: boolean;
  reason?: string;
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
  attempts: ProviderAttempt[];
  input: TensorInfo;
  output: TensorInfo;
  /** The session was loaded from the optimized-model cache. */
  fromCache: boolean;
  /** Session creation (including provider attempts) and the warm-up run, in the worker. */
  loadMs: number;
  warmupMs: number;
}
