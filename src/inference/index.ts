export { InferenceEngine, type EngineOptions } from './engine.js';
export { EnginePool } from './engine-pool.js';
export { topLabels, type LabelScore, type TopLabelsOptions } from './classify.js';
export {
  EngineClosedError,
  InferenceRunError,
  InvalidTensorError,
  ModelLoadError,
  NoExecutionProviderError,
  RestartLimitError,
  WorkerCrashedError,
} from './errors.js';
export { formatPlacement, placementFromProfile, type Placement } from './placement.js';
export { probeProvider, type ProbeResult } from './provider-probe.js';
export { loadRuntime, resolveRuntime, RuntimeLoadError, type OrtModule, type RuntimeInfo } from './runtime.js';
export type { EngineInfo, InferenceOutput, InputTensor, ProviderAttempt, SessionSettings, TensorInfo } from './types.js';
