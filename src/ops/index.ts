export {
  createLogger,
  createSilentLogger,
  isJournalStream,
  journalPriority,
  maskCredentialsDeep,
  maskingDestination,
  maskLine,
  REDACT_PATHS,
  resolveLogFormat,
  type Logger,
  type LoggerOptions,
} from './logger.js';
export {
  Metrics,
  SlidingWindow,
  percentile,
  type DropReason,
  type MetricsOptions,
  type CpuFigures,
  type MetricsSnapshot,
  type ModelInfo,
  type Percentiles,
  type PublishingCounts,
  type ResultTimings,
} from './metrics.js';
export { startHttpServer, HttpListenError, type HealthReport, type HttpServer, type HttpServerOptions } from './http.js';
export { createNotifier, type Notifier, type NotifierOptions } from './notify.js';
export { packageVersion } from './package-info.js';
export { lockStateDir, StateDirLockedError, type StateLock } from './state-lock.js';
export { describeAllocator, memoryAllocator, preloadFailure, type AllocatorInfo } from './allocator.js';
export { canStartUnder, schedulingPolicy, underSchedulingPolicy, type SchedulingPolicy } from './scheduling.js';
export { serviceUnitSettings, type ServiceUnitSettings } from './service-unit.js';
