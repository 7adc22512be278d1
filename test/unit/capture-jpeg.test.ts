import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { JpegStreamSplitter, jpegProblem } from '../../src/capture/index.js';

const EOI = Buffer.from([0xff, 0xd9]);

function jpeg(width: number, height: number, color: string): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: color } })
    .jpeg()
    .toBuffer();
}

/** A JPEG whose APP1 segment carries a whole thumbnail JPEG, with its own SOI and EOI, as EXIF does. */
function withThumbnail(main: Buffer, thumbnail: Buffer): Buffer {
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), thumbnail]);
  const header = Buffer.from([0xff, 0xe1, 0, 0]);
  header.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([main.subarray(0, 2), header, payload, main.subarray(2)]);
}

function splitAll(chunks: Buffer[], splitter = new JpegStreamSplitter()): Buffer[] {
  return chunks.flatMap((chunk) => splitter.push(chunk));
}

function chunksOf(data: Buffer, size: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size));
  return chunks;
}

describe('JpegStreamSplitter', () => {
  let red: Buffer;
  let green: Buffer;
  let blue: Buffer;
  let thumbed: Buffer;

  beforeAll(async () => {
    red = await jpeg(64, 48, '#ff0000');
    green = await jpeg(80, 60, '#00ff00');
    blue = await jpeg(32, 32, '#0000ff');
    thumbed = withThumbnail(await jpeg(96, 64, '#808000'), await jpeg(16, 16, '#ffffff'));
  });

  it('returns each of several frames in one chunk, byte for byte', () => {
    const frames = splitAll([Buffer.concat([red, green, blue])]);
    expect(frames).toEqual([red, green, blue]);
  });

  it.each([1, 2, 3, 7, 64, 1000])('reassembles frames split across %i-byte chunks', (size) => {
    const frames = splitAll(chunksOf(Buffer.concat([red, green, blue]), size));
    expect(frames).toEqual([red, green, blue]);
  });

  it('does not end a frame at the EOI of an APP1 thumbnail', async () => {
    // The naive FF D9 search would cut this frame inside the thumbnail.
    expect(thumbed.indexOf(EOI)).toBeLessThan(thumbed.length - 2);
    for (const size of [5, 4096]) {
      const frames = splitAll(chunksOf(Buffer.concat([red, thumbed, blue]), size));
      expect(frames).toEqual([red, thumbed, blue]);
    }
    const meta = await sharp(thumbed).metadata();
    expect([meta.width, meta.height]).toEqual([96, 64]);
  });

  it('skips leading and in-between garbage, including stray FF bytes', () => {
    const garbage = Buffer.from([0x00, 0xff, 0x00, 0x41, 0xff, 0xff, 0xd8, 0x12, 0x34, 0xff]);
    const splitter = new JpegStreamSplitter();
    const frames = splitAll([garbage, red, garbage, green], splitter);
    expect(frames).toEqual([red, green]);
    expect(splitter.stats().discardedBytes).toBe(2 * garbage.length);
  });

  it('keeps a truncated trailing frame pending and drops it on reset', () => {
    const splitter = new JpegStreamSplitter();
    const half = green.subarray(0, Math.floor(green.length / 2));
    expect(splitAll([red, half], splitter)).toEqual([red]);
    expect(splitter.pendingBytes).toBe(half.length);
    expect(splitter.reset()).toBe(half.length);
    expect(splitAll([blue], splitter)).toEqual([blue]);
    expect(splitter.stats().discardedBytes).toBe(half.length);
  });

  it('drops a frame cut short by the start of the next one', () => {
    const splitter = new JpegStreamSplitter();
    const cut = red.subarray(0, red.length - 100);
    expect(splitAll([cut, green], splitter)).toEqual([green]);
    expect(splitter.stats().discardedBytes).toBe(cut.length);
  });

  it('treats FF 00 stuffing and restart markers in entropy data as data', () => {
    const sos = Buffer.from([0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00]);
    const entropy = Buffer.from([0x12, 0xff, 0x00, 0x34, 0xff, 0xd0, 0x56, 0xff, 0xff, 0xd7, 0x78, 0xff, 0x00]);
    const app = Buffer.from([0xff, 0xe0, 0x00, 0x06, 0xff, 0xd9, 0xff, 0xd8]); // EOI/SOI bytes inside a segment
    const frame = Buffer.concat([Buffer.from([0xff, 0xd8]), app, sos, entropy, EOI]);
    expect(splitAll(chunksOf(Buffer.concat([frame, red]), 3))).toEqual([frame, red]);
  });

  it('gives up on a frame that outgrows the size limit and finds the next one', () => {
    expect(red.length).toBeLessThan(2000);
    const splitter = new JpegStreamSplitter(2000);
    const big = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xda, 0x00, 0x02]), Buffer.alloc(10_000, 0x11)]);
    expect(splitAll([big, red], splitter)).toEqual([red]);
    expect(splitter.pendingBytes).toBe(0);
    expect(splitter.stats().discardedBytes).toBe(big.length);
  });
});

describe('jpegProblem', () => {
  it('accepts a complete JPEG and names what is wrong with others', async () => {
    const good = await jpeg(8, 8, '#123456');
    expect(jpegProblem(good)).toBeUndefined();
    expect(jpegProblem(Buffer.alloc(0))).toMatch(/empty/);
    expect(jpegProblem(Buffer.from('GIF89a........'))).toMatch(/not a JPEG/);
    expect(jpegProblem(good.subarray(0, good.length - 10))).toMatch(/truncated/);
  });
});
