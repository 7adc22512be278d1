export {
  CaptureError,
  CorruptFrameError,
  SourceExhaustedError,
  SourceStoppedError,
  type CommonSourceOptions,
  type FfmpegSourceOptions,
  type FilesSourceOptions,
  type Frame,
  type FrameSource,
  type SourceHealth,
  type SourceOptions,
  type SourceStats,
  type WebcamSourceOptions,
} from './types.js';
export { createSource } from './create-source.js';
export { CaptureRunner, type CaptureRunnerOptions } from './runner.js';
export { FilesSource } from './files-source.js';
export { WebcamSource, WEBCAM_DEFAULTS } from './webcam-source.js';
export { FfmpegSource, FFMPEG_DEFAULTS, buildFfmpegArgs } from './ffmpeg-source.js';
export { JpegStreamSplitter, jpegProblem } from './jpeg.js';
