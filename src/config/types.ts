// The validated, derived configuration the rest of the daemon reads. Written out by hand (not inferred
// from the convict schema) so editors show real names and docs; schema.ts must stay in step, which the
// config tests check by loading every key.

export const CAPTURE_BACKENDS = ['webcam', 'ffmpeg', 'files'] as const;
export type CaptureBackend = (typeof CAPTURE_BACKENDS)[number];

export const EXECUTION_PROVIDERS = [
  'cpu', 'qnn', 'webgpu', 'cuda', 'tensorrt', 'coreml', 'dml', 'xnnpack', 'vsinpu', 'acl', 'rknpu', 'nnapi',
] as const;
export type ExecutionProviderName = (typeof EXECUTION_PROVIDERS)[number];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const MODEL_PRECISIONS = ['auto', 'fp32', 'int8'] as const;
/** `model quantize --target` presets (model/quantize/targets.ts; a test keeps the two lists equal), plus auto. */
export const QUANTIZATION_TARGETS = ['auto', 'cpu', 'cpu-arm', 'qnn-htp', 'acl', 'vsinpu', 'xnnpack'] as const;
export type QuantizationTargetName = (typeof QUANTIZATION_TARGETS)[number];
export type ModelPrecision = (typeof MODEL_PRECISIONS)[number];

/** How the quantizer picks activation ranges (`model quantize --method`, `model.calibration.method`). */
export const CALIBRATION_METHODS = ['minmax', 'percentile', 'entropy'] as const;
export type CalibrationMethodName = (typeof CALIBRATION_METHODS)[number];
/** Best measured on the built Inception V2 (99.999-percentile histogram; see the README's figures). */
export const DEFAULT_CALIBRATION_METHOD: CalibrationMethodName = 'percentile';

export const GRAPH_OPTIMIZATION_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;
export type GraphOptimizationLevel = (typeof GRAPH_OPTIMIZATION_LEVELS)[number];

export interface FilesCaptureConfig {
  /** Folder or glob of images. */
  path: string;
  loop: boolean;
}

export interface WebcamCaptureConfig {
  device: string;
  width: number;
  height: number;
  /** Frames the camera delivers and we discard before the one kept (auto-exposure settles). */
  skipFrames: number;
  jpegQuality: number;
  /** Per-capture limit; a hung capture process is killed after it. */
  timeoutMs: number;
}

export interface FfmpegCaptureConfig {
  /** V4L2 device, RTSP/HTTP URL or file. */
  input: string;
  /** ffmpeg `-f` for the input ('' = let ffmpeg probe). */
  inputFormat: string;
  /** 0 = source default. */
  width: number;
  height: number;
  fps: number;
  /** Restart the ffmpeg child when no frame arrives for this long. */
  stallTimeoutMs: number;
  extraInputArgs: string[];
  /** The ffmpeg executable ('' = `ffmpeg` on PATH). */
  path: string;
}

export interface CaptureConfig {
  backend: CaptureBackend;
  /** Minimum ms between frames (0 = as fast as inference allows). */
  intervalMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  files: FilesCaptureConfig;
  webcam: WebcamCaptureConfig;
  ffmpeg: FfmpegCaptureConfig;
}

/** One camera: the `capture` settings with an id; keys a `sources` entry leaves out come from `capture`. */
export interface SourceConfig extends CaptureConfig {
  /** Topic-safe name, used in `<base>/<id>/labels`. */
  id: string;
}

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
  /** Derived: a configured 0 becomes min(cores, 2). */
  threads: number;
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
  keepaliveSec: number;
  embeddedBroker: EmbeddedBrokerConfig;
}

export interface OutboxConfig {
  maxMessages: number;
  maxBytes: number;
  maxAgeSec: number;
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
  metrics: { intervalSec: number };
  health: { maxAckWaitSec: number; stallSec: number };
  log: { level: LogLevel };
}
