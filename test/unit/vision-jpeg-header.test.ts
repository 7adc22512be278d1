import { readdirSync, readFileSync } from 'node:fs';
import sharp, { type JpegOptions } from 'sharp';
import { describe, expect, it } from 'vitest';
import { readJpegHeader } from '../../src/vision/jpeg-header.js';

/** A small image whose pixels differ, as a JPEG with the given options and EXIF orientation. */
async function jpeg(width: number, height: number, options: JpegOptions = {}, orientation?: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3).map((_, i) => (i * 37) % 251);
  let img = sharp(raw, { raw: { width, height, channels: 3 } }).jpeg(options);
  if (orientation !== undefined) img = img.withMetadata({ orientation });
  return img.toBuffer();
}

/** What sharp (libvips) reads from the same bytes: the reference the header reader must agree with. */
async function sharpHeader(data: Buffer): Promise<{ width: number; height: number; orientation: number } | undefined> {
  const meta = await sharp(data)
    .metadata()
    .catch(() => undefined);
  if (!meta?.width || !meta.height || meta.format !== 'jpeg') return undefined;
  return { width: meta.width, height: meta.height, orientation: meta.orientation ?? 1 };
}

/** An APP1 EXIF segment holding only IFD0 with an Orientation entry, in the given byte order. */
function exifSegment(orientation: number, bigEndian: boolean): Buffer {
  const tiff = Buffer.alloc(8 + 2 + 12 + 4);
  const u16 = (v: number, at: number) => (bigEndian ? tiff.writeUInt16BE(v, at) : tiff.writeUInt16LE(v, at));
  const u32 = (v: number, at: number) => (bigEndian ? tiff.writeUInt32BE(v, at) : tiff.writeUInt32LE(v, at));
  tiff.write(bigEndian ? 'MM' : 'II', 0, 'latin1');
  u16(42, 2);
  u32(8, 4);
  u16(1, 8); // one entry
  u16(0x0112, 10); // Orientation
  u16(3, 12); // SHORT
  u32(1, 14); // one value
  u16(orientation, 18);
  const body = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(body.length + 2, 2);
  return Buffer.concat([head, body]);
}

/** `data` with `segment` inserted right after SOI. */
function withSegment(data: Buffer, segment: Buffer): Buffer {
  return Buffer.concat([data.subarray(0, 2), segment, data.subarray(2)]);
}

describe('readJpegHeader', () => {
  it('reads the size sharp reads, for baseline, progressive, 4:4:4 and greyscale JPEGs of odd sizes', async () => {
    const cases: Buffer[] = [
      await jpeg(33, 17),
      await jpeg(640, 480, { progressive: true }),
      await jpeg(101, 299, { chromaSubsampling: '4:4:4' }),
      await sharp(await jpeg(45, 12))
        .greyscale()
        .jpeg()
        .toBuffer(),
    ];
    for (const data of cases) {
      const header = readJpegHeader(data);
      expect(header).toBeDefined();
      expect(header).toEqual(await sharpHeader(data));
    }
  });

  it('reads the size and orientation of the sample photographs as sharp does', async () => {
    const dir = 'models/samples';
    const files = readdirSync(dir).filter((f) => /\.jpe?g$/i.test(f));
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const data = readFileSync(`${dir}/${file}`);
      expect(readJpegHeader(data), file).toEqual(await sharpHeader(data));
    }
  });

  it('reads every EXIF orientation as sharp does, little- and big-endian', async () => {
    for (let orientation = 1; orientation <= 8; orientation++) {
      const written = await jpeg(24, 10, {}, orientation);
      expect(readJpegHeader(written)).toEqual({ width: 24, height: 10, orientation });
      for (const bigEndian of [false, true]) {
        const data = withSegment(await jpeg(24, 10), exifSegment(orientation, bigEndian));
        const header = readJpegHeader(data);
        expect(header).toEqual({ width: 24, height: 10, orientation });
        expect(header).toEqual(await sharpHeader(data));
      }
    }
  });

  it('takes an orientation outside 1–8, or an EXIF segment without one, as upright', async () => {
    const plain = await jpeg(24, 10);
    expect(readJpegHeader(withSegment(plain, exifSegment(9, false)))?.orientation).toBe(1);
    expect(readJpegHeader(withSegment(plain, exifSegment(0, true)))?.orientation).toBe(1);
    const xmp = Buffer.concat([Buffer.from([0xff, 0xe1, 0, 14]), Buffer.from('http://ns.a', 'latin1'), Buffer.from([0])]);
    expect(readJpegHeader(withSegment(plain, xmp))).toEqual({ width: 24, height: 10, orientation: 1 });
  });

  it('gives up on anything it cannot read whole: not a JPEG, cut before the frame header, a length past the end', async () => {
    const data = await jpeg(30, 20);
    const png = await sharp(await jpeg(4, 4))
      .png()
      .toBuffer();
    expect(readJpegHeader(png)).toBeUndefined();
    expect(readJpegHeader(Buffer.alloc(0))).toBeUndefined();
    const sof = data.findIndex((b, i) => b === 0xff && data[i + 1] === 0xc0);
    const sofEnd = sof + 2 + data.readUInt16BE(sof + 2);
    for (let cut = 0; cut < sofEnd; cut++) expect(readJpegHeader(data.subarray(0, cut)), `cut at ${cut}`).toBeUndefined();
    expect(readJpegHeader(data.subarray(0, sofEnd))).toEqual({ width: 30, height: 20, orientation: 1 });
    const broken = Buffer.from(data);
    broken.writeUInt16BE(0xfff0, 4); // the first segment claims more bytes than there are
    expect(readJpegHeader(broken)).toBeUndefined();
  });

  it('never throws on damaged headers, and agrees with sharp whenever both read a size', async () => {
    const data = withSegment(await jpeg(64, 48, { progressive: true }), exifSegment(6, true));
    let state = 99;
    const random = () => (state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32;
    let compared = 0;
    for (let i = 0; i < 1000; i++) {
      const damaged = Buffer.from(data);
      // Half the copies are damaged in the EXIF segment (the first 40 bytes), half anywhere in the header.
      const span = i % 2 === 0 ? 40 : 400;
      for (let flips = 1 + Math.floor(random() * 3); flips > 0; flips--) {
        damaged[Math.floor(random() * span)] = Math.floor(random() * 256);
      }
      const header = readJpegHeader(damaged);
      const reference = await sharpHeader(damaged);
      if (header && reference) {
        expect(header, `damaged copy ${i}`).toEqual(reference);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(300);
  });
});
