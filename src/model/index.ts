// Public API of the model folder, including the INT8 quantizer (./quantize/) and `model eval` (./eval.ts).
export * from './onnx.js';
export {
  ManifestError,
  findManifestForModel,
  loadLabels,
  loadManifest,
  modelsDir,
  projectRoot,
  resolveModel,
  validateManifest,
  writeManifestBeside,
  type ChannelOrder,
  type Layout,
  type ModelManifest,
  type ResizeMode,
  type ResolvedModel,
} from './manifest.js';
export {
  INPUT_NAME as BUILT_INPUT_NAME,
  OUTPUT_NAME as BUILT_OUTPUT_NAME,
  buildInceptionV2,
  buildInceptionV2Detailed,
  builtInputSpec,
  generateImages,
  writeBuiltModel,
  type BuildOptions,
  type BuiltModel,
  type InceptionVariant,
  type WrittenModel,
} from './build.js';
export { FetchError, fetchModel, listCatalogue, type FetchOptions, type FetchResult } from './fetch.js';
export { formatModelInfo, inspectModel, type ModelInfo, type TensorInfo } from './inspect.js';
export {
  DEFAULT_TARGET,
  TARGET_ALIASES,
  TARGET_NAMES,
  TargetOptionError,
  UnsupportedModelError,
  canonicalTarget,
  describeWeights,
  listCalibrationImages,
  quantizeModel,
  resolveTarget,
  targetHelpLines,
  type ActivationType,
  type CalibrationMethod,
  type LayerSqnr,
  type Preprocess,
  type QdqSettings,
  type QuantizeOptions,
  type QuantizeReport,
  type TargetName,
  type TargetOverrides,
  type WeightScheme,
  type WeightType,
} from './quantize/index.js';
export { evaluateModels, type EvalOptions, type EvalReport } from './eval.js';
