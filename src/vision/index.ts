export { createPreprocessor, DEFAULT_MAX_INPUT_PIXELS, tuneSharp } from './preprocess.js';
export { FrameDecodeError, FrameTooLargeError } from './errors.js';
export type { InputSpec, PreprocessedFrame, Preprocessor, PreprocessorOptions, ResizeKernel } from './types.js';
export { encodeSnapshot, isJpeg, SnapshotTooLargeError } from './snapshot.js';
