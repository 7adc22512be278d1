import type { InputTensor } from '../inference/types.js';

/**
 * The manifest's `input` object (docs/ARCHITECTURE.md, "Contracts"); field names are kept identical so a parsed manifest
 * can be passed straight in.
 */
export interface InputSpec {
  /** Graph input name, e.g. "data_0". */
  name: string;
  layout: 'NCHW' | 'NHWC';
  width: number;
  height: number;
  /** Order of the colour channels in the tensor. */
  channels: 'RGB' | 'BGR';
  /** Multiplies the 0–255 pixel before `mean` is subtracted. */
  scale: number;
  /** Per tensor channel, in the order named by `channels`. */
  mean: [number, number, number];
  std: [number, number, number];
  /** crop: shorter side to size then centre crop; fill: stretch; pad: letterbox. */
  resize: 'crop' | 'fill' | 'pad';
}

/** sharp's resampling kernels. */
export type ResizeKernel = 'nearest' | 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3';

export interface PreprocessorOptions {
  /** Frames with more pixels (width × height) are rejected before they are decoded. Default 40e6. */
  maxInputPixels?: number;
  /** Letterbox colour for `resize: 'pad'`, 0–255 per channel, RGB. Default black. */
  padColor?: { r: number; g: number; b: number };
  /** Resampling kernel. Default 'lanczos3' (sharp's default). */
  kernel?: ResizeKernel;
}

export interface PreprocessedFrame {
  tensor: InputTensor;
  /** Size of the original frame after EXIF orientation, before resizing. */
  width: number;
  height: number;
}

/**
 * Frame → tensor. `reuse`: an array of the tensor's size to write into (e.g. the previous frame's, handed
 * back by the inference worker) instead of allocating one; ignored when its size differs or it was detached.
 */
export type Preprocessor = (image: Buffer, reuse?: Float32Array) => Promise<PreprocessedFrame>;
