export { EXIT, EX_CONFIG, EX_OK, EX_RUNTIME, EX_USAGE, type ExitCode } from './exit-codes.js';
export { ConfigError, maskUrlCredentials, type ConfigProblem } from './errors.js';
export {
  loadConfig,
  readConfigFile,
  mergeConfigInput,
  keysSetByEnv,
  MQTT_PASSWORD_CREDENTIAL,
  SETTINGS_FILE_NAME,
  type LoadConfigOptions,
  type LoadedConfig,
} from './load.js';
export { configFileFormat, parseConfigFile, parseConfigText, type ConfigFileData, type ConfigFileFormat, type Position } from './file.js';
export { resolveEnv, type EnvSetting, type ResolvedEnv } from './env.js';
export {
  configurationReport,
  describeOrigin,
  formatConfigurationReport,
  formatOrigins,
  valuesWithOrigins,
  type ConfigOrigin,
  type ConfigurationReport,
  type ValueWithOrigin,
} from './origins.js';
export { CONFIG_SCHEMA_PATH, configJsonSchema, configJsonSchemaText } from './json-schema.js';
export { DEFAULT_SOURCE_ID, resolveSources } from './sources.js';
export { redactConfig, configToJSON, REDACTED } from './redact.js';
export { readSecretFile } from './secrets.js';
export { projectRoot } from './paths.js';
export { buildSchema, envName, legacyEnvName, schemaKeys, deviceIdFromHostname, type SchemaKey } from './schema.js';
export {
  CALIBRATION_METHODS,
  CAPTURE_BACKENDS,
  CONTROL_OPERATIONS,
  PUBLISH_POLICIES,
  DEFAULT_CALIBRATION_METHOD,
  EXECUTION_PROVIDERS,
  LOG_FORMATS,
  LOG_LEVELS,
  MODEL_PRECISIONS,
  GRAPH_OPTIMIZATION_LEVELS,
  QUANTIZATION_TARGETS,
  type CalibrationMethodName,
  type CaptureBackend,
  type CaptureConfig,
  type Config,
  type ControlOperation,
  type MotionConfig,
  type PublishPolicyConfig,
  type SnapshotConfig,
  type SourceStages,
  type EmbeddedBrokerConfig,
  type ExecutionProviderName,
  type FfmpegCaptureConfig,
  type FilesCaptureConfig,
  type GraphOptimizationLevel,
  type HttpConfig,
  type InferenceConfig,
  type LogFormat,
  type LogLevel,
  type ModelConfig,
  type ModelPrecision,
  type MqttConfig,
  type QuantizationTargetName,
  type OutboxConfig,
  type SourceConfig,
  type WebcamCaptureConfig,
} from './types.js';
