// The validated, derived configuration the rest of the daemon reads. Written out by hand (not inferred
// from the convict schema) so editors show real names and docs; schema.ts must stay in step, which the
// config tests check by loading every key.

import type { BackendValues, CaptureSettings, CaptureSourceConfig } from '../capture/index.js';

// The capture settings come from capture's backend registry (one row per backend), so a backend's keys
// and types are written once; config/schema.ts builds the keys from the same rows.
export { CAPTURE_BACKENDS, type CaptureBackend } from '../capture/index.js';

export const EXECUTION_PROVIDERS = [
  'cpu',
  'qnn',
  'webgpu',
  'cuda',
  'tensorrt',
  'coreml',
  'dml',
  'xnnpack',
  'vsinpu',
  'acl',
  'rknpu',
  'nnapi',
] as const;
export type ExecutionProviderName = (typeof EXECUTION_PROVIDERS)[number];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How log lines are written: JSON lines, readable lines, or auto (readable on a terminal, JSON otherwise). */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const MODEL_PRECISIONS = ['auto', 'fp32', 'int8'] as const;
/** `model quantize --target` presets (model/quantize/targets.ts; a test keeps the two lists equal), plus auto. */
export const QUANTIZATION_TARGETS = ['auto', 'cpu', 'cpu-arm', 'qnn-htp', 'acl', 'vsinpu', 'xnnpack'] as const;
export type QuantizationTargetName = (typeof QUANTIZATION_TARGETS)[number];
export type ModelPrecision = (typeof MODEL_PRECISIONS)[number];

/** How the quantizer picks activation ranges (`model quantize --method`, `model.calibration.method`). */
export const CALIBRATION_METHODS = ['minmax', 'percentile', 'entropy', 'mse'] as const;
export type CalibrationMethodName = (typeof CALIBRATION_METHODS)[number];
/** Best measured on the built Inception V2 (99.999-percentile histogram; see the README's figures). */
export const DEFAULT_CALIBRATION_METHOD: CalibrationMethodName = 'percentile';

export const GRAPH_OPTIMIZATION_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;
export type GraphOptimizationLevel = (typeof GRAPH_OPTIMIZATION_LEVELS)[number];

export type FilesCaptureConfig = BackendValues<'files'>;
export type WebcamCaptureConfig = BackendValues<'webcam'>;
/** 0 and "" mean the source's own value (width, height, fps; inputFormat probes; path = ffmpeg on PATH). */
export type FfmpegCaptureConfig = BackendValues<'ffmpeg'>;

/** `backend`, `intervalMs`, `retryInitialMs`, `retryMaxMs` and one group per backend. */
export type CaptureConfig = CaptureSettings;

/** Which Results of a source are published (daemon/publish-policy.ts). */
export const PUBLISH_POLICIES = ['every', 'change'] as const;
export type PublishPolicyName = (typeof PUBLISH_POLICIES)[number];

export interface PublishPolicyConfig {
  policy: PublishPolicyName;
  /** `change`: a move of the top score by more than this publishes. */
  scoreDelta: number;
  /** `change`: publish at least this often (0 = never by time alone). */
  heartbeatSec: number;
  /** At most this many Results per second (0 = no cap). */
  maxPerSec: number;
}

export interface MotionConfig {
  enabled: boolean;
  /** Fraction of the grey thumbnail's pixels that must change for a frame to be inferred. */
  threshold: number;
  /** Infer at least this often, motion or not (0 = only on motion). */
  maxIntervalSec: number;
}

export interface SnapshotConfig {
  /** Publish the frame when the top label changes. */
  onChange: boolean;
  /** At most one snapshot on change per this many seconds. */
  minIntervalSec: number;
  retain: boolean;
  /** A larger JPEG is re-encoded smaller to fit. */
  maxBytes: number;
}

/** What each source decides after capture: gating, which Results to publish, snapshots. */
export interface SourceStages {
  publish: PublishPolicyConfig;
  motion: MotionConfig;
  snapshot: SnapshotConfig;
}

/**
 * One camera: the `capture` settings with an id, and its stages; keys a `sources` entry leaves out come
 * from `capture`, `publish`, `motion` and `snapshot`.
 */
export type SourceConfig = CaptureSourceConfig & SourceStages;

/** Request operations (`<base>/request/<op>`). */
export const CONTROL_OPERATIONS = ['status', 'metrics', 'info', 'pause', 'resume', 'snapshot', 'reload', 'set'] as const;
export type ControlOperation = (typeof CONTROL_OPERATIONS)[number];

export interface ModelConfig {
  /** ONNX file; '' = the model the daemon builds in `cacheDir` (see daemon/model-setup.ts). */
  path: string;
  /** Manifest file; '' = found beside the model. */
  manifest: string;
  precision: ModelPrecision;
  /** Derived: `<stateDir>/models` unless set. Always absolute. */
  cacheDir: string;
  /** Used when the daemon quantizes a model itself (daemon/model-setup.ts). */
  calibration: {
    /** Folder or glob of images; '' = the files source's path, else the bundled models/samples. */
    path: string;
    method: CalibrationMethodName;
  };
  /** Which provider the daemon shapes its own INT8 model for ('auto' = the first execution provider's). */
  quantizationTarget: QuantizationTargetName;
}

export type ProviderOptionValue = string | number | string[];

export interface InferenceConfig {
  executionProviders: ExecutionProviderName[];
  /** Derived: a configured 0 becomes min(cores, 2 × workers) ÷ workers, at least 1. */
  threads: number;
  /** Inference workers, each with its own session. */
  workers: number;
  allowSpinning: boolean;
  graphOptimizationLevel: GraphOptimizationLevel;
  /** Per provider: option name → value, handed to ORT (numbers as their decimal text). */
  providerOptions: Partial<Record<ExecutionProviderName, Record<string, ProviderOptionValue>>>;
  cpuFallback: boolean;
  epContextCache: boolean;
  /** '' = the bundled onnxruntime-node. */
  runtime: string;
  topK: number;
  threshold: number;
}

export interface EmbeddedBrokerConfig {
  enabled: boolean;
  host: string;
  port: number;
}

export interface MqttConfig {
  url: string;
  qos: 0 | 1 | 2;
  /** Derived: `inceptiond/<deviceId>` unless set. */
  baseTopic: string;
  /** Derived: `inceptiond-<deviceId>` unless set. */
  clientId: string;
  protocolVersion: 4 | 5;
  username: string;
  /** Path of a file holding the password; derived from `$CREDENTIALS_DIRECTORY/mqtt-password` when unset. */
  passwordFile: string;
  ca: string;
  cert: string;
  key: string;
  rejectUnauthorized: boolean;
  /** Credentials over plain TCP to a non-loopback broker are refused unless this is set. */
  allowInsecure: boolean;
  connectTimeoutSec: number;
  /** Reconnection backoff: from min, doubling with jitter, up to max. */
  reconnectMinSec: number;
  reconnectMaxSec: number;
  keepaliveSec: number;
  /** MQTT 5: how long the broker keeps the session (subscriptions, queued requests) after a disconnect. */
  sessionExpirySec: number;
  /** MQTT 5: a Result not delivered to a subscriber within this many seconds expires (0 = never). */
  resultExpirySec: number;
  embeddedBroker: EmbeddedBrokerConfig;
}

export interface OutboxConfig {
  maxMessages: number;
  maxBytes: number;
  maxAgeSec: number;
  /** 0 = fsync before each append resolves; N = at most every N ms. */
  fsyncIntervalMs: number;
}

export interface HttpConfig {
  enabled: boolean;
  host: string;
  /** 0 = ephemeral. */
  port: number;
}

export interface Config {
  deviceId: string;
  /** Always absolute. */
  stateDir: string;
  /** Always absolute. */
  runtimeDir: string;
  capture: CaptureConfig;
  /** The effective sources: the configured list, or the single default source "camera" built from `capture`. */
  sources: SourceConfig[];
  model: ModelConfig;
  inference: InferenceConfig;
  mqtt: MqttConfig;
  outbox: OutboxConfig;
  http: HttpConfig;
  /** Defaults of each source's stages; a `sources` entry may override them. */
  publish: PublishPolicyConfig;
  motion: MotionConfig;
  snapshot: SnapshotConfig;
  control: { enabled: boolean; allow: ControlOperation[] };
  homeassistant: { enabled: boolean; discoveryPrefix: string; statusTopic: string };
  metrics: { intervalSec: number };
  health: { maxAckWaitSec: number; stallSec: number };
  log: { level: LogLevel; format: LogFormat };
}
