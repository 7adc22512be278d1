import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CaptureError, createSource, SourceExhaustedError, type FilesSourceOptions, type FrameSource } from '../../src/capture/index.js';
import { naturalOrder } from '../../src/capture/files-source.js';
import { mulberry32 } from '../../src/util/index.js';

const logger = pino({ level: 'silent' });

function jpeg(color: string): Promise<Buffer> {
  return sharp({ create: { width: 16, height: 16, channels: 3, background: color } })
    .jpeg()
    .toBuffer();
}

describe('files source', () => {
  let dir: string;
  let images: Record<string, Buffer>;
  let source: FrameSource | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'capture-files-'));
    images = {
      'frame10.jpg': await jpeg('#ff0000'),
      'frame2.jpeg': await jpeg('#00ff00'),
      'frame1.JPG': await jpeg('#0000ff'),
      'frame3.png': await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ffffff' } })
        .png()
        .toBuffer(),
    };
    for (const [name, data] of Object.entries(images)) await writeFile(path.join(dir, name), data);
    await writeFile(path.join(dir, 'notes.txt'), 'not an image');
    await writeFile(path.join(dir, 'README'), 'no extension');
    await mkdir(path.join(dir, 'sub'));
    await writeFile(path.join(dir, 'sub', 'nested.jpg'), await jpeg('#ffff00'));
  });

  afterEach(async () => {
    await source?.stop();
    source = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function open(options: Partial<FilesSourceOptions>): Promise<FrameSource> {
    source = createSource({ id: 'files', backend: 'files', intervalMs: 0, path: dir, loop: false, ...options }, logger);
    await source.start();
    return source;
  }

  async function drain(src: FrameSource): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (;;) {
      try {
        out.push((await src.next()).data);
      } catch (error) {
        if (error instanceof SourceExhaustedError) return out;
        throw error;
      }
    }
  }

  it('delivers the images of a folder in natural name order, skipping non-images and subfolders', async () => {
    const frames = await drain(await open({}));
    expect(frames).toEqual([images['frame1.JPG'], images['frame2.jpeg'], images['frame3.png'], images['frame10.jpg']]);
    expect(source!.stats()).toEqual({ captured: 4, failed: 0, dropped: 0 });
  });

  it('without loop, rejects with SourceExhaustedError after the last image, every time', async () => {
    const src = await open({});
    await drain(src);
    await expect(src.next()).rejects.toBeInstanceOf(SourceExhaustedError);
    await expect(src.next()).rejects.toBeInstanceOf(SourceExhaustedError);
  });

  it('with loop, starts again and picks up images added meanwhile', async () => {
    const src = await open({ loop: true });
    const firstPass: Buffer[] = [];
    for (let i = 0; i < 4; i++) firstPass.push((await src.next()).data);
    const added = await jpeg('#00ffff');
    await writeFile(path.join(dir, 'frame0.jpg'), added);
    const secondPass: Buffer[] = [];
    for (let i = 0; i < 5; i++) secondPass.push((await src.next()).data);
    expect(secondPass).toEqual([added, ...firstPass]);
  });

  it('accepts a glob, including one that recurses', async () => {
    expect(await drain(await open({ path: path.join(dir, '*.jp*g') }))).toEqual([images['frame2.jpeg'], images['frame10.jpg']]);
    await source!.stop();
    const all = await drain(await open({ path: path.join(dir, '**/*.jpg') }));
    expect(all).toHaveLength(2);
    expect(all).toContainEqual(images['frame10.jpg']);
  });

  it('reads files lazily: a file replaced after start() is read with its new content', async () => {
    const src = await open({});
    const replacement = await jpeg('#abcdef');
    await writeFile(path.join(dir, 'frame1.JPG'), replacement);
    expect((await src.next()).data).toEqual(replacement);
  });

  it('a corrupt or vanished image is a CaptureError naming the file, and the next call moves on', async () => {
    await writeFile(path.join(dir, 'frame1.JPG'), 'plain text with a .JPG name');
    await writeFile(path.join(dir, 'frame2.jpeg'), images['frame2.jpeg']!.subarray(0, 50));
    const src = await open({});
    await rm(path.join(dir, 'frame3.png'));
    await expect(src.next()).rejects.toThrow(/frame1\.JPG: not a JPEG, PNG or WebP image/);
    await expect(src.next()).rejects.toThrow(/frame2\.jpeg: the JPEG is truncated/);
    await expect(src.next()).rejects.toThrow(/cannot read .*frame3\.png/);
    await expect(src.next()).resolves.toMatchObject({ data: images['frame10.jpg'] });
    expect(src.stats()).toEqual({ captured: 1, failed: 3, dropped: 0 });
  });

  it('a looping source whose images are all gone fails with CaptureError instead of spinning', async () => {
    const src = await open({ path: path.join(dir, 'sub'), loop: true });
    await src.next();
    await rm(path.join(dir, 'sub', 'nested.jpg'));
    const error = await src.next().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CaptureError);
    expect((error as Error).message).toMatch(/no images match/);
  });

  it('refuses a missing folder at start() and bad options at construction', async () => {
    const missing = createSource({ id: 'files', backend: 'files', intervalMs: 0, path: path.join(dir, 'nope'), loop: true }, logger);
    await expect(missing.start()).rejects.toThrow(/cannot read .*nope/);
    expect(() => createSource({ id: 'files', backend: 'files', intervalMs: 0, path: '', loop: true }, logger)).toThrow(/files\.path/);
    expect(() => createSource({ id: 'bad id/x', backend: 'files', intervalMs: 0, path: dir, loop: true }, logger)).toThrow(/source id/);
  });
});

describe('naturalOrder', () => {
  it('orders numbered names by value and the rest case-insensitively, as a numeric "en" collator does', () => {
    const random = mulberry32(3);
    const prefixes = ['frame', 'Frame', 'cam-a_', 'cam-B_', 'img', 'IMG_', 'snapshot '];
    const names = new Set<string>();
    while (names.size < 300) {
      const n = Math.floor(random() * 2000);
      const ext = ['.jpg', '.JPG', '.png', '.jpeg'][Math.floor(random() * 4)]!;
      names.add(`${prefixes[Math.floor(random() * prefixes.length)]}${n}${ext}`);
    }
    // names that differ only in case or padding are ordered apart (below): leave ties out here
    const byCollator = [...names].sort(new Intl.Collator('en', { numeric: true, sensitivity: 'base' }).compare);
    const unique = byCollator.filter(
      (x, i) => i === 0 || new Intl.Collator('en', { numeric: true, sensitivity: 'base' }).compare(byCollator[i - 1]!, x) !== 0,
    );
    expect([...unique].sort(naturalOrder)).toEqual(unique);
  });

  it('is a total order: equal values differing in padding or case still sort one way, whatever the input order', () => {
    const names = ['frame10.jpg', 'frame02.jpg', 'Frame2.jpg', 'frame2.jpg', 'frame1.JPG', 'frame1.jpg', 'a.png', 'frame.png'];
    const sorted = [...names].sort(naturalOrder);
    expect([...names].reverse().sort(naturalOrder)).toEqual(sorted);
    expect(sorted).toEqual(['a.png', 'frame.png', 'frame1.JPG', 'frame1.jpg', 'Frame2.jpg', 'frame02.jpg', 'frame2.jpg', 'frame10.jpg']);
  });
});
