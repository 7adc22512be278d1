import sharp, { type Sharp } from 'sharp';
import { describe, expect, it } from 'vitest';
import { encodeSnapshot, FrameDecodeError, isJpeg, SnapshotTooLargeError } from '../../src/vision/index.js';

/** Uniform noise: the worst case for JPEG, so its size is predictably large. */
function noise(width: number, height: number): Sharp {
  let s = 12345;
  const raw = Buffer.alloc(width * height * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (s = (s * 1664525 + 1013904223) >>> 0) >>> 24;
  return sharp(raw, { raw: { width, height, channels: 3 } });
}

function gradient(width: number, height: number): Sharp {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0, p = 0; y < height; y++) {
    for (let x = 0; x < width; x++, p += 3) raw.set([(255 * x) / width, (255 * y) / height, 128], p);
  }
  return sharp(raw, { raw: { width, height, channels: 3 } });
}

describe('isJpeg', () => {
  it('checks the SOI marker', async () => {
    expect(isJpeg(await gradient(8, 8).jpeg().toBuffer())).toBe(true);
    expect(isJpeg(await gradient(8, 8).png().toBuffer())).toBe(false);
    expect(isJpeg(Buffer.from([0xff, 0xd8]))).toBe(false);
    expect(isJpeg(Buffer.alloc(0))).toBe(false);
  });
});

describe('encodeSnapshot', () => {
  it('returns a JPEG that fits as it is', async () => {
    const jpeg = await gradient(64, 48).jpeg().toBuffer();
    const out = await encodeSnapshot(jpeg, jpeg.length);
    expect(out).toBe(jpeg);
  });

  it('makes a JPEG of another format', async () => {
    const png = await sharp({ create: { width: 40, height: 30, channels: 4, background: { r: 200, g: 30, b: 30, alpha: 0.5 } } })
      .png()
      .toBuffer();
    const out = await encodeSnapshot(png, 64 * 1024);
    expect(isJpeg(out)).toBe(true);
    const meta = await sharp(out).metadata();
    expect(meta).toMatchObject({ format: 'jpeg', width: 40, height: 30, channels: 3 });
  });

  it('lowers the quality first: a JPEG slightly too large keeps its size', async () => {
    const jpeg = await gradient(320, 240).jpeg({ quality: 100 }).toBuffer();
    const out = await encodeSnapshot(jpeg, jpeg.length - 1);
    expect(out.length).toBeLessThan(jpeg.length);
    expect(await sharp(out).metadata()).toMatchObject({ format: 'jpeg', width: 320, height: 240 });
  });

  it('halves a large noisy frame until it fits', async () => {
    const png = await noise(1024, 768).png().toBuffer();
    const maxBytes = 20_000;
    const out = await encodeSnapshot(png, maxBytes);
    expect(out.length).toBeLessThanOrEqual(maxBytes);
    const meta = await sharp(out).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width! / meta.height!).toBeCloseTo(4 / 3, 1);
    expect(meta.width).toBeLessThan(1024);
    expect(meta.width).toBeGreaterThanOrEqual(16);
  });

  it('applies the EXIF orientation when it re-encodes', async () => {
    // Stored 40×20, orientation 6 (rotate 90° clockwise to display): shown 20×40.
    const jpeg = await noise(40, 20).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
    const out = await encodeSnapshot(jpeg, jpeg.length - 1);
    const meta = await sharp(out).metadata();
    expect(meta).toMatchObject({ width: 20, height: 40 });
    expect(meta.orientation ?? 1).toBe(1);
  });

  it('throws when even a tiny JPEG cannot fit', async () => {
    const png = await noise(256, 256).png().toBuffer();
    await expect(encodeSnapshot(png, 100)).rejects.toBeInstanceOf(SnapshotTooLargeError);
    await expect(encodeSnapshot(png, 100)).rejects.toThrow(/cannot fit in 100 bytes/);
  });

  it('rejects what it cannot decode and a bad maxBytes', async () => {
    await expect(encodeSnapshot(Buffer.from('not an image'), 1000)).rejects.toBeInstanceOf(FrameDecodeError);
    const jpeg = await gradient(8, 8).jpeg().toBuffer();
    await expect(encodeSnapshot(jpeg, 0)).rejects.toBeInstanceOf(RangeError);
    await expect(encodeSnapshot(jpeg, 1.5)).rejects.toBeInstanceOf(RangeError);
  });
});
