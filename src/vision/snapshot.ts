import sharp from 'sharp';
import { FrameDecodeError } from './errors.js';

/** Qualities tried at each size: 80 shows no blocking at camera sizes; below 40 a smaller image looks better. */
const QUALITIES = [80, 60, 40] as const;
/** Below this longer side a snapshot says nothing: give up rather than send a few blurry pixels. */
const MIN_SIDE = 16;

/** The frame cannot be made to fit `maxBytes`, even at the smallest size tried. */
export class SnapshotTooLargeError extends Error {
  override readonly name = 'SnapshotTooLargeError';
  constructor(
    readonly maxBytes: number,
    readonly smallestBytes: number,
    size: string,
  ) {
    super(
      `snapshot cannot fit in ${maxBytes} bytes: the smallest JPEG tried (${size}, quality ${QUALITIES.at(-1)}) has ${smallestBytes} bytes`,
    );
  }
}

/** Whether `buf` starts like a JPEG (SOI marker and the start of the next marker: FF D8 FF). */
export function isJpeg(buf: Uint8Array): boolean {
  return buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
}

/**
 * The frame as a JPEG of at most `maxBytes`. A JPEG that already fits is returned as is (the common case
 * with a camera: no decode, no encode). Otherwise the frame is decoded once (EXIF orientation applied,
 * alpha dropped, sRGB) and encoded at quality 80, 60, 40; if none fits, at half the size with the same
 * qualities, and so on, so resolution is given up only after quality. Re-encoded snapshots carry no
 * metadata.
 *
 * Rejects with FrameDecodeError when the frame cannot be decoded, SnapshotTooLargeError when even a
 * 16-pixel JPEG is larger than `maxBytes`, RangeError for a `maxBytes` that is not a positive integer.
 */
export async function encodeSnapshot(image: Buffer, maxBytes: number): Promise<Buffer> {
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`maxBytes must be a positive integer, got ${maxBytes}`);
  if (isJpeg(image) && image.length <= maxBytes) return image;

  let pixels: Buffer;
  let width: number;
  let height: number;
  let channels: 1 | 2 | 3 | 4;
  try {
    // Decoded once to raw pixels: each attempt below then only encodes (and halves), never decodes again.
    const { data, info } = await sharp(image, { failOn: 'error' })
      .rotate()
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    pixels = data;
    ({ width, height, channels } = info);
  } catch (err) {
    throw new FrameDecodeError(`cannot decode frame for a snapshot: ${(err as Error).message}`, { cause: err });
  }

  for (;;) {
    const raw = { raw: { width, height, channels } };
    let bytes = 0;
    for (const quality of QUALITIES) {
      const jpeg = await sharp(pixels, raw).jpeg({ quality }).toBuffer();
      if (jpeg.length <= maxBytes) return jpeg;
      bytes = jpeg.length;
    }
    if (Math.max(width, height) <= MIN_SIDE) throw new SnapshotTooLargeError(maxBytes, bytes, `${width}×${height}`);
    // Halve, but not below MIN_SIDE on the longer side, so the last attempt is at exactly that size.
    const factor = Math.max(0.5, MIN_SIDE / Math.max(width, height));
    width = Math.max(1, Math.round(width * factor));
    height = Math.max(1, Math.round(height * factor));
    pixels = await sharp(pixels, raw).resize(width, height, { fit: 'fill' }).raw().toBuffer();
  }
}
