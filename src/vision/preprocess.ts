import os from 'node:os';
import sharp from 'sharp';
import type { Metadata, OutputInfo, Sharp } from 'sharp';
import { FrameDecodeError, FrameTooLargeError } from './errors.js';
import { readJpegHeader } from './jpeg-header.js';
import type { InputSpec, PreprocessedFrame, Preprocessor, PreprocessorOptions } from './types.js';

/** Frames larger than this are refused before decoding (a decompression bomb must not allocate gigabytes). */
export const DEFAULT_MAX_INPUT_PIXELS = 40e6;
const FIT = { crop: 'cover', fill: 'fill', pad: 'contain' } as const;

/**
 * Builds the frame → tensor function for one model input. Each call decodes with sharp (EXIF
 * orientation applied, alpha dropped, greyscale/CMYK made sRGB, embedded ICC profiles ignored), resizes
 * per `spec.resize`, and normalises `(pixel * scale - mean[c]) / std[c]` into a fresh Float32Array in
 * the spec's layout and channel order: a new Float32Array, or `reuse` when the caller passes one of the
 * right size (the daemon passes the previous frame's, which the inference worker hands back, so the
 * ~600 KB tensor is not garbage on every frame). sharp's own buffers (the decoded, resized pixels) are
 * still allocated per frame: toBuffer cannot write into a caller's buffer.
 *
 * What a frame costs (README, "Benchmarks"; 2-core x64, ms of CPU per frame, 224×224 crop):
 * - JPEG shrink-on-load: with only orientation, alpha and colourspace steps before the resize, sharp
 *   lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the reduction allows it while keeping at least
 *   2× for the resampling kernel: a 1280×720 frame is decoded at 640×360 and costs about what a
 *   640×480 one does (3.3 vs 3.0 ms), which is decoded whole (its 2.1× reduction is too small).
 * - Embedded ICC profiles: sharp converts such a frame to sRGB with lcms on every full-size pixel, 2–3×
 *   the cost of the whole frame (2.4 → 5.4 ms for an sRGB-tagged 720p JPEG, 7.4 ms for a Display P3
 *   one). Cameras write sRGB, and the model was not trained with colour management: `ignoreIcc`.
 *   This was the main cause of "similar JPEGs differing ~4×"; the rest is progressive encoding (≈1.8×
 *   at 720p: libjpeg must buffer every scan's coefficients before it can output a row) and 4:4:4
 *   chroma (≈1.3×), which are the camera's choice.
 * - A JPEG's size and orientation come from its markers (`readJpegHeader`), not from sharp's
 *   metadata(): one trip through libuv's pool per frame instead of two, 0.24–0.30 CPU ms less.
 * - EXIF orientation is honoured: sharp 0.35 applies autoOrient after the shrink-on-load decode, so it
 *   costs nothing on an upright frame and ≈0.5 ms on a rotated 720p one (2.5 → 3.0 ms), while a camera
 *   mounted sideways that says so gets upright frames; the reported width/height are the oriented ones.
 *
 * Rejects with FrameDecodeError (corrupt, truncated, unsupported) or FrameTooLargeError.
 */
export function createPreprocessor(spec: InputSpec, options: PreprocessorOptions = {}): Preprocessor {
  validateSpec(spec);
  const maxInputPixels = options.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
  if (!(maxInputPixels > 0)) throw new RangeError(`maxInputPixels must be positive, got ${maxInputPixels}`);
  const pad = options.padColor ?? { r: 0, g: 0, b: 0 };
  const background = { r: pad.r, g: pad.g, b: pad.b, alpha: 1 };
  const kernel = options.kernel ?? 'lanczos3';
  const { width, height } = spec;

  // One lookup table per tensor channel: 256 possible byte values, computed once with the exact
  // manifest formula, so the per-pixel loop is three loads and three stores.
  const sourceChannel = spec.channels === 'RGB' ? [0, 1, 2] : [2, 1, 0];
  const luts = [0, 1, 2].map((c) => {
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) lut[v] = (v * spec.scale - spec.mean[c]!) / spec.std[c]!;
    return lut;
  }) as [Float32Array, Float32Array, Float32Array];
  const dims = spec.layout === 'NCHW' ? [1, 3, height, width] : [1, height, width, 3];

  return async function preprocess(image: Buffer, reuse?: Float32Array): Promise<PreprocessedFrame> {
    if (!Buffer.isBuffer(image) || image.length === 0) throw new FrameDecodeError('frame is empty');
    // failOn 'error': a truncated JPEG is an error, not a half-grey image (the default 'warning'
    // also catches it but rejects many camera JPEGs for harmless warnings).
    const img = sharp(image, { failOn: 'error', limitInputPixels: maxInputPixels, ignoreIcc: true });
    const {
      width: storedWidth,
      height: storedHeight,
      oriented,
    } = readJpegHeaderSize(image) ?? (await sharpHeaderSize(img, image, maxInputPixels));
    const pixels = storedWidth * storedHeight;
    if (pixels > maxInputPixels) throw new FrameTooLargeError(pixels, maxInputPixels);

    let raw: { data: Buffer; info: OutputInfo };
    try {
      raw = await img
        .autoOrient()
        .removeAlpha()
        .toColourspace('srgb')
        .resize(width, height, { fit: FIT[spec.resize], position: 'centre', background, kernel })
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true });
    } catch (err) {
      const message = (err as Error).message;
      // Backstop for formats whose header under-reports size (sharp checks again while decoding).
      if (/pixel limit/i.test(message)) throw new FrameTooLargeError(pixels, maxInputPixels);
      throw new FrameDecodeError(`cannot decode frame: ${message}`, { cause: err });
    }
    const { data: px, info } = raw;
    if (info.channels !== 3 || info.width !== width || info.height !== height) {
      throw new FrameDecodeError(`decoder produced ${info.width}x${info.height}x${info.channels}, expected ${width}x${height}x3`);
    }

    const plane = width * height;
    const out = reuse?.length === plane * 3 ? reuse : new Float32Array(plane * 3);
    const [l0, l1, l2] = luts;
    const [s0, s1, s2] = sourceChannel as [number, number, number];
    if (spec.layout === 'NCHW') {
      for (let i = 0, p = 0; i < plane; i++, p += 3) {
        out[i] = l0[px[p + s0]!]!;
        out[plane + i] = l1[px[p + s1]!]!;
        out[2 * plane + i] = l2[px[p + s2]!]!;
      }
    } else {
      for (let p = 0; p < out.length; p += 3) {
        out[p] = l0[px[p + s0]!]!;
        out[p + 1] = l1[px[p + s1]!]!;
        out[p + 2] = l2[px[p + s2]!]!;
      }
    }
    return { tensor: { data: out, dims: [...dims] }, width: oriented.width, height: oriented.height };
  };
}

/**
 * Process-wide libvips settings for a daemon that also runs ONNX Runtime with `inferenceThreads`
 * intra-op threads (docs/ARCHITECTURE.md, "Threads"):
 * - no decoded-image cache (50 MB by default): it buys nothing for a stream of new frames;
 * - libvips gets the cores ORT does not use, at least one. Its default (one thread per core) puts
 *   three busy threads on a two-core board while a frame is preprocessed during the previous one's
 *   inference; measured with `inceptiond bench` (README "Benchmarks"), one thread was ~3 % faster
 *   per Result and used less CPU per frame.
 * Returns the concurrency set.
 */
export function tuneSharp(inferenceThreads: number, cores = os.availableParallelism()): number {
  sharp.cache(false);
  const concurrency = Math.max(1, cores - inferenceThreads);
  sharp.concurrency(concurrency);
  return concurrency;
}

interface HeaderSize {
  /** As stored in the file. */
  width: number;
  height: number;
  /** After EXIF orientation. */
  oriented: { width: number; height: number };
}

/** A camera's JPEG: its size from the markers in JavaScript, without a round trip through libuv's pool. */
function readJpegHeaderSize(image: Buffer): HeaderSize | undefined {
  const header = readJpegHeader(image);
  if (!header) return undefined;
  const { width, height, orientation } = header;
  // Orientations 5–8 turn the image a quarter, so its upright width is the stored height.
  return { width, height, oriented: orientation >= 5 ? { width: height, height: width } : { width, height } };
}

/** Any other format (or a JPEG the header reader gives up on): sharp reads the header, and names what is wrong. */
async function sharpHeaderSize(img: Sharp, image: Buffer, maxInputPixels: number): Promise<HeaderSize> {
  let meta: Metadata;
  try {
    meta = await img.metadata();
  } catch (err) {
    const message = (err as Error).message;
    if (/pixel limit/i.test(message)) throw new FrameTooLargeError(await headerPixels(image), maxInputPixels);
    throw new FrameDecodeError(`cannot read frame header: ${message}`, { cause: err });
  }
  if (!meta.width || !meta.height) throw new FrameDecodeError(`frame has no dimensions (format ${meta.format})`);
  return { width: meta.width, height: meta.height, oriented: meta.autoOrient ?? { width: meta.width, height: meta.height } };
}

/** Size from the header alone (no pixel limit), only to say how large a rejected frame was. */
async function headerPixels(image: Buffer): Promise<number> {
  const meta = await sharp(image, { limitInputPixels: false })
    .metadata()
    .catch(() => undefined);
  return (meta?.width ?? 0) * (meta?.height ?? 0);
}

/** A bad spec is a configuration error: thrown at creation, never per frame. */
function validateSpec(spec: InputSpec): void {
  const fail = (what: string): never => {
    throw new TypeError(`invalid model input spec: ${what}`);
  };
  if (!Number.isInteger(spec.width) || spec.width <= 0) fail(`width ${spec.width}`);
  if (!Number.isInteger(spec.height) || spec.height <= 0) fail(`height ${spec.height}`);
  if (spec.layout !== 'NCHW' && spec.layout !== 'NHWC') fail(`layout ${String(spec.layout)}`);
  if (spec.channels !== 'RGB' && spec.channels !== 'BGR') fail(`channels ${String(spec.channels)}`);
  if (!(spec.resize in FIT)) fail(`resize ${String(spec.resize)}`);
  if (!Number.isFinite(spec.scale)) fail(`scale ${spec.scale}`);
  for (const key of ['mean', 'std'] as const) {
    const v = spec[key];
    if (!Array.isArray(v) || v.length !== 3 || !v.every(Number.isFinite)) fail(`${key} must be 3 numbers`);
  }
  if (spec.std.some((s) => s === 0)) fail('std must not contain 0');
}
