export { InferenceEngine, type EngineOptions } from './engine.js';
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
export type { EngineInfo, InferenceOutput, InputTensor, ProviderAttempt, SessionSettings, TensorInfo } from './types.js';
