import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { createPreprocessor, FrameDecodeError, FrameTooLargeError, tuneSharp, type InputSpec } from '../../src/vision/index.js';

type RGB = [number, number, number];

/** Encodes a row-major grid of RGB pixels as a lossless PNG. */
async function png(grid: RGB[][]): Promise<Buffer> {
  const height = grid.length;
  const width = grid[0]!.length;
  const raw = Buffer.from(grid.flat(2));
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

/** A grid whose pixels are all different, so any misplaced pixel shows. */
function distinctGrid(width: number, height: number): RGB[][] {
  return Array.from({ length: height }, (_, y) =>
    Array.from({ length: width }, (_, x): RGB => [10 + 30 * x, 20 + 50 * y, 200 - 20 * x - 40 * y]),
  );
}

/** Each `block`-sized cell has one colour: every resampling kernel then keeps that colour exactly. */
function blockGrid(cols: number, rows: number, bw: number, bh: number): { grid: RGB[][]; cell: (x: number, y: number) => RGB } {
  const cell = (x: number, y: number): RGB => [40 + 100 * x, 60 + 90 * y, 250 - 70 * x - 50 * y];
  const grid = Array.from({ length: rows * bh }, (_, y) =>
    Array.from({ length: cols * bw }, (_, x) => cell(Math.floor(x / bw), Math.floor(y / bh))),
  );
  return { grid, cell };
}

function spec(over: Partial<InputSpec>): InputSpec {
  return {
    name: 'input',
    layout: 'NCHW',
    width: 2,
    height: 2,
    channels: 'RGB',
    scale: 1,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    resize: 'crop',
    ...over,
  };
}

/** Reads pixel (x, y) of an NCHW tensor as [c0, c1, c2]. */
function nchwAt(data: Float32Array, w: number, h: number, x: number, y: number): number[] {
  return [0, 1, 2].map((c) => data[c * w * h + y * w + x]!);
}

describe('createPreprocessor', () => {
  it('crop: keeps the centre of a wide frame when the shorter side already fits', async () => {
    const grid = distinctGrid(4, 2);
    const pre = createPreprocessor(spec({ resize: 'crop' }), { kernel: 'nearest' });
    const { tensor, width, height } = await pre(await png(grid));
    expect([width, height]).toEqual([4, 2]);
    expect(tensor.dims).toEqual([1, 3, 2, 2]);
    for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) expect(nchwAt(tensor.data, 2, 2, x, y)).toEqual(grid[y]![x + 1]);
  });

  it('writes into a reused array of the right size (same values as a fresh one) and ignores one of another size', async () => {
    const grid = distinctGrid(4, 2);
    const pre = createPreprocessor(spec({ resize: 'crop' }), { kernel: 'nearest' });
    const fresh = await pre(await png(grid));
    const reuse = new Float32Array(fresh.tensor.data.length).fill(Number.NaN);
    const reused = await pre(await png(grid), reuse);
    expect(reused.tensor.data).toBe(reuse);
    expect(Array.from(reuse)).toEqual(Array.from(fresh.tensor.data));
    const wrongSize = new Float32Array(5);
    const other = await pre(await png(grid), wrongSize);
    expect(other.tensor.data).not.toBe(wrongSize);
    expect(Array.from(other.tensor.data)).toEqual(Array.from(fresh.tensor.data));
  });

  it('crop: scales the shorter side down, then crops the centre', async () => {
    // 8x4 of 2x2 blocks → scaled to 4x2 → centre columns are blocks 1 and 2.
    const { grid, cell } = blockGrid(4, 2, 2, 2);
    const pre = createPreprocessor(spec({ resize: 'crop' }), { kernel: 'nearest' });
    const { tensor } = await pre(await png(grid));
    for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) expect(nchwAt(tensor.data, 2, 2, x, y)).toEqual(cell(x + 1, y));
  });

  it('fill: stretches every block of the frame onto one output pixel', async () => {
    // 8x2 → 2x2 squeezes x by 4 and keeps y: aspect ratio is not preserved.
    const { grid, cell } = blockGrid(2, 2, 4, 1);
    const pre = createPreprocessor(spec({ resize: 'fill' }), { kernel: 'nearest' });
    const { tensor } = await pre(await png(grid));
    for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) expect(nchwAt(tensor.data, 2, 2, x, y)).toEqual(cell(x, y));
  });

  it('pad: letterboxes with the configured colour above and below', async () => {
    const grid = distinctGrid(4, 2);
    const padColor = { r: 11, g: 22, b: 33 };
    const pre = createPreprocessor(spec({ resize: 'pad', width: 4, height: 4 }), { kernel: 'nearest', padColor });
    const { tensor } = await pre(await png(grid));
    for (let x = 0; x < 4; x++) {
      expect(nchwAt(tensor.data, 4, 4, x, 0)).toEqual([11, 22, 33]);
      expect(nchwAt(tensor.data, 4, 4, x, 3)).toEqual([11, 22, 33]);
      expect(nchwAt(tensor.data, 4, 4, x, 1)).toEqual(grid[0]![x]);
      expect(nchwAt(tensor.data, 4, 4, x, 2)).toEqual(grid[1]![x]);
    }
  });

  it('pad defaults to black', async () => {
    const pre = createPreprocessor(spec({ resize: 'pad', width: 2, height: 4 }), { kernel: 'nearest' });
    const { tensor } = await pre(await png(distinctGrid(2, 2)));
    expect(nchwAt(tensor.data, 2, 4, 0, 0)).toEqual([0, 0, 0]);
    expect(nchwAt(tensor.data, 2, 4, 1, 3)).toEqual([0, 0, 0]);
  });

  it('applies (pixel*scale - mean[c]) / std[c] in BGR order with an NHWC layout', async () => {
    const grid = distinctGrid(2, 2);
    const s = spec({
      layout: 'NHWC',
      channels: 'BGR',
      scale: 1 / 255,
      mean: [0.5, 0.4, 0.3],
      std: [0.2, 0.25, 0.5],
    });
    const { tensor } = await createPreprocessor(s, { kernel: 'nearest' })(await png(grid));
    expect(tensor.dims).toEqual([1, 2, 2, 3]);
    for (let y = 0; y < 2; y++)
      for (let x = 0; x < 2; x++) {
        const [r, g, b] = grid[y]![x]!;
        const bgr = [b, g, r];
        for (let c = 0; c < 3; c++) {
          const expected = (bgr[c]! * s.scale - s.mean[c]!) / s.std[c]!;
          expect(tensor.data[(y * 2 + x) * 3 + c]).toBeCloseTo(expected, 5);
        }
      }
  });

  it('orders NCHW planes by the named channel order', async () => {
    const grid = distinctGrid(2, 2);
    const rgb = await createPreprocessor(spec({ channels: 'RGB' }))(await png(grid));
    const bgr = await createPreprocessor(spec({ channels: 'BGR' }))(await png(grid));
    const plane = (t: Float32Array, c: number) => Array.from(t.subarray(c * 4, c * 4 + 4));
    expect(plane(bgr.tensor.data, 0)).toEqual(plane(rgb.tensor.data, 2));
    expect(plane(bgr.tensor.data, 1)).toEqual(plane(rgb.tensor.data, 1));
    expect(plane(bgr.tensor.data, 2)).toEqual(plane(rgb.tensor.data, 0));
    expect(plane(rgb.tensor.data, 0)).toEqual(grid.flat().map((p) => p[0]));
  });

  it('turns greyscale into three equal channels and drops alpha', async () => {
    const grey = await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } })
      .png()
      .toBuffer();
    const g = await createPreprocessor(spec({}), { kernel: 'nearest' })(grey);
    for (const [x, y, v] of [
      [0, 0, 0],
      [1, 0, 100],
      [0, 1, 200],
      [1, 1, 255],
    ] as const)
      expect(nchwAt(g.tensor.data, 2, 2, x, y)).toEqual([v, v, v]);

    const rgba = await sharp(Buffer.from([1, 2, 3, 255, 4, 5, 6, 255, 7, 8, 9, 255, 10, 11, 12, 255]), {
      raw: { width: 2, height: 2, channels: 4 },
    })
      .png()
      .toBuffer();
    const a = await createPreprocessor(spec({}), { kernel: 'nearest' })(rgba);
    expect(nchwAt(a.tensor.data, 2, 2, 1, 1)).toEqual([10, 11, 12]);
  });

  it('applies EXIF orientation and reports the oriented frame size', async () => {
    const jpeg = await sharp(await png(distinctGrid(8, 4)))
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const { width, height } = await createPreprocessor(spec({}))(jpeg);
    expect([width, height]).toEqual([4, 8]);
  });

  describe('decisions about camera JPEGs (see the comment on createPreprocessor)', () => {
    const s224 = spec({ width: 224, height: 224 });
    /** A 640×480 camera-like frame: a smooth gradient with blocks and some noise. */
    async function cameraRaw(): Promise<{ data: Buffer; info: { width: number; height: number; channels: 3 } }> {
      const width = 640;
      const height = 480;
      const data = Buffer.alloc(width * height * 3);
      let state = 99;
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          state = (state * 1103515245 + 12345) >>> 0;
          const n = ((state >>> 24) & 7) - 4;
          const i = (y * width + x) * 3;
          const block = ((x >> 6) + (y >> 6)) & 1 ? 60 : 0;
          data[i] = Math.max(0, Math.min(255, (x * 255) / width + n));
          data[i + 1] = Math.max(0, Math.min(255, (y * 255) / height - block + n + 30));
          data[i + 2] = 128 + block / 2 + n;
        }
      return { data, info: { width, height, channels: 3 } };
    }
    /** The decode path before ICC profiles were ignored. */
    async function previousPath(jpeg: Buffer): Promise<Buffer> {
      return sharp(jpeg, { failOn: 'error' })
        .autoOrient()
        .removeAlpha()
        .toColourspace('srgb')
        .resize(224, 224, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
        .raw()
        .toBuffer();
    }
    /** NCHW tensor (scale 1, mean 0, std 1) back to interleaved RGB bytes. */
    function interleaved(t: Float32Array): Float32Array {
      const plane = 224 * 224;
      const out = new Float32Array(plane * 3);
      for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = t[c * plane + i]!;
      return out;
    }
    function diff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; mean: number } {
      let max = 0;
      let sum = 0;
      for (let i = 0; i < a.length; i++) {
        const d = Math.abs(a[i]! - b[i]!);
        sum += d;
        if (d > max) max = d;
      }
      return { max, mean: sum / a.length };
    }

    it('gives what the previous path gave on a baseline and a progressive JPEG', async () => {
      const { data, info } = await cameraRaw();
      for (const progressive of [false, true]) {
        const jpeg = await sharp(data, { raw: info }).jpeg({ quality: 85, progressive }).toBuffer();
        expect((await sharp(jpeg).metadata()).isProgressive).toBe(progressive);
        const { tensor } = await createPreprocessor(s224)(jpeg);
        const d = diff(interleaved(tensor.data), await previousPath(jpeg));
        expect(d.max).toBeLessThanOrEqual(1);
      }
    });

    it('ignores an embedded ICC profile: an sRGB-tagged frame stays within a few levels of the converted one', async () => {
      const { data, info } = await cameraRaw();
      const plain = await sharp(data, { raw: info }).jpeg({ quality: 85 }).toBuffer();
      const tagged = await sharp(data, { raw: info }).jpeg({ quality: 85 }).withIccProfile('srgb').toBuffer();
      expect((await sharp(tagged).metadata()).hasProfile).toBe(true);
      const pre = createPreprocessor(s224);
      const a = await pre(tagged);
      const b = await pre(plain);
      // The profile is not applied: the pixels are taken as they are, like those of the untagged frame.
      expect(diff(a.tensor.data, b.tensor.data).max).toBeLessThanOrEqual(1);
      // And they stay close to what colour management made of them (lcms's sRGB round trip).
      expect(diff(interleaved(a.tensor.data), await previousPath(tagged)).mean).toBeLessThan(3);
    });

    it('honours EXIF orientation: a frame stored sideways with orientation 6 gives the upright tensor', async () => {
      const { data, info } = await cameraRaw();
      const upright = await sharp(data, { raw: info }).jpeg({ quality: 95 }).toBuffer();
      // Orientation 6: the stored pixels must be turned 90° clockwise to be shown upright.
      const sidewaysRaw = await sharp(data, { raw: info }).rotate(-90).raw().toBuffer({ resolveWithObject: true });
      const sideways = await sharp(sidewaysRaw.data, { raw: sidewaysRaw.info })
        .jpeg({ quality: 95 })
        .withMetadata({ orientation: 6 })
        .toBuffer();
      const pre = createPreprocessor(s224);
      const a = await pre(sideways);
      const b = await pre(upright);
      expect([a.width, a.height]).toEqual([640, 480]);
      const d = diff(a.tensor.data, b.tensor.data);
      expect(d.mean).toBeLessThan(2);
      // Without the orientation the same pixels would be far apart.
      const ignored = await pre(await sharp(sidewaysRaw.data, { raw: sidewaysRaw.info }).jpeg({ quality: 95 }).toBuffer());
      expect(diff(ignored.tensor.data, b.tensor.data).mean).toBeGreaterThan(10);
    });
  });

  it('returns a fresh buffer per frame, so transferring one never detaches the next', async () => {
    const pre = createPreprocessor(spec({}));
    const image = await png(distinctGrid(2, 2));
    const a = await pre(image);
    const b = await pre(image);
    expect(a.tensor.data.buffer).not.toBe(b.tensor.data.buffer);
    expect(Array.from(a.tensor.data)).toEqual(Array.from(b.tensor.data));
  });

  describe('bad frames', () => {
    async function noisyJpeg(): Promise<Buffer> {
      let state = 12345;
      const noise = Buffer.alloc(128 * 128 * 3, 0).map(() => (state = (state * 1103515245 + 12345) >>> 0) >>> 24);
      return sharp(noise, { raw: { width: 128, height: 128, channels: 3 } })
        .jpeg({ quality: 90 })
        .toBuffer();
    }
    const pre = createPreprocessor(spec({}));

    it('rejects a JPEG truncated in its scan data instead of returning a grey image', async () => {
      const jpeg = await noisyJpeg();
      await expect(pre(jpeg)).resolves.toBeDefined();
      for (const keep of [0.5, 0.9, 0.999]) {
        await expect(pre(jpeg.subarray(0, Math.floor(jpeg.length * keep)))).rejects.toBeInstanceOf(FrameDecodeError);
      }
    });

    it('rejects random bytes and an empty buffer', async () => {
      let state = 7;
      const random = Buffer.from(new Uint8Array(2000).map(() => (state = (state * 69069 + 1) >>> 0) >>> 24));
      await expect(pre(random)).rejects.toBeInstanceOf(FrameDecodeError);
      await expect(pre(Buffer.alloc(0))).rejects.toBeInstanceOf(FrameDecodeError);
    });

    it('rejects a frame over the pixel limit before decoding it', async () => {
      const limited = createPreprocessor(spec({}), { maxInputPixels: 100 });
      await expect(limited(await png(distinctGrid(10, 10)))).resolves.toBeDefined();
      const err = await limited(await png(distinctGrid(11, 10))).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FrameTooLargeError);
      expect((err as FrameTooLargeError).pixels).toBe(110);
      // A JPEG's size is read from its markers in JavaScript, not by sharp: the same limit holds.
      const jpegOf = async (w: number, h: number) =>
        sharp(await png(distinctGrid(w, h)))
          .jpeg()
          .toBuffer();
      await expect(limited(await jpegOf(10, 10))).resolves.toBeDefined();
      const jpegErr = await limited(await jpegOf(10, 11)).catch((e: unknown) => e);
      expect(jpegErr).toBeInstanceOf(FrameTooLargeError);
      expect((jpegErr as FrameTooLargeError).pixels).toBe(110);
    });
  });

  it('rejects an invalid spec at creation', () => {
    expect(() => createPreprocessor(spec({ std: [1, 0, 1] }))).toThrow(/std/);
    expect(() => createPreprocessor(spec({ width: 0 }))).toThrow(/width/);
    expect(() => createPreprocessor(spec({ resize: 'zoom' as never }))).toThrow(/resize/);
  });
});

describe('tuneSharp', () => {
  it('gives libvips the cores ONNX Runtime leaves, at least one, and turns its cache off', () => {
    const before = sharp.concurrency();
    try {
      expect(tuneSharp(2, 2)).toBe(1);
      expect(sharp.concurrency()).toBe(1);
      expect(tuneSharp(2, 8)).toBe(6);
      expect(sharp.concurrency()).toBe(6);
      expect(tuneSharp(4, 2)).toBe(1);
      expect(sharp.cache()).toMatchObject({ memory: { max: 0 }, items: { max: 0 } });
    } finally {
      sharp.concurrency(before);
    }
  });
});
