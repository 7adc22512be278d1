export {
  CaptureError,
  CorruptFrameError,
  SourceExhaustedError,
  SourceStoppedError,
  type CommonSourceOptions,
  type Frame,
  type FrameSource,
  type SourceHealth,
  type SourceStats,
} from './types.js';
export {
  CAPTURE_BACKEND_TABLE,
  CAPTURE_BACKENDS,
  DEFAULT_CAPTURE_BACKEND,
  backendProblems,
  createSource,
  describeCaptureBackends,
  runnerOptionsFor,
  sourceFromConfig,
  toSourceOptions,
  type BackendOptions,
  type BackendValues,
  type CaptureBackend,
  type CaptureSettings,
  type CaptureSourceConfig,
  type SourceOptions,
} from './registry.js';
export type { BackendSourceContext, CaptureBackendDefinition } from './backend.js';
export {
  COMMON_CAPTURE_FIELDS,
  fieldProblem,
  type CommonCaptureValues,
  type Field,
  type FieldProblem,
  type Fields,
  type ValuesOf,
} from './fields.js';
export { CaptureRunner, type CaptureRunnerOptions } from './runner.js';
export { FilesSource, FILES_FIELDS, type FilesSourceOptions } from './files-source.js';
export { WebcamSource, WEBCAM_FIELDS, webcamTmpDirProblem, type WebcamSourceOptions } from './webcam-source.js';
export { FfmpegSource, FFMPEG_FIELDS, buildFfmpegArgs, type FfmpegSourceOptions } from './ffmpeg-source.js';
export { JpegStreamSplitter, jpegProblem } from './jpeg.js';
