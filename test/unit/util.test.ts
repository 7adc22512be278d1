// src/util: the helpers every layer shares, on real files in a temp folder.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fileSha256,
  ImageListError,
  isFile,
  listImageFiles,
  LogThrottle,
  pathExists,
  requireFile,
  round2,
  writeFileAtomic,
} from '../../src/util/index.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'util-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fileSha256', () => {
  it('equals the digest of the whole content, across several read pieces (1 MiB each)', async () => {
    const data = Buffer.alloc(2 * 1024 * 1024 + 200_017);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    const file = path.join(dir, 'blob.bin');
    await writeFile(file, data);
    expect(await fileSha256(file)).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('of an empty file is the empty digest; of a missing file rejects with ENOENT', async () => {
    const empty = path.join(dir, 'empty.bin');
    await writeFile(empty, '');
    expect(await fileSha256(empty)).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    await expect(fileSha256(path.join(dir, 'nope.bin'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('pathExists, isFile, requireFile', () => {
  it('tell a file, a folder, a dangling symlink and nothing apart', async () => {
    const file = path.join(dir, 'f.txt');
    const folder = path.join(dir, 'sub');
    const dangling = path.join(dir, 'dangling');
    await writeFile(file, 'x');
    await mkdir(folder);
    await symlink(path.join(dir, 'gone'), dangling);
    expect([await pathExists(file), await pathExists(folder), await pathExists(dangling), await pathExists(path.join(dir, 'no'))]).toEqual([
      true,
      true,
      false,
      false,
    ]);
    expect([await isFile(file), await isFile(folder), await isFile(dangling)]).toEqual([true, false, false]);
  });

  it('requireFile names what is missing, and refuses a folder', async () => {
    await expect(requireFile(path.join(dir, 'f.txt'), 'model file')).resolves.toBeUndefined();
    await expect(requireFile(path.join(dir, 'missing.onnx'), 'reference model')).rejects.toThrow(
      /^reference model not found: .*missing\.onnx$/,
    );
    await expect(requireFile(path.join(dir, 'sub'), 'model file')).rejects.toThrow(/^model file .*sub is not a file$/);
  });
});

describe('listImageFiles', () => {
  let images: string;
  beforeAll(async () => {
    images = path.join(dir, 'images');
    await mkdir(path.join(images, 'nested'), { recursive: true });
    for (const name of ['b.JPG', 'a.png', 'c.webp', 'notes.txt', 'nested/d.jpg']) await writeFile(path.join(images, name), 'x');
    await mkdir(path.join(dir, 'no-images'));
    await writeFile(path.join(dir, 'no-images', 'readme.md'), 'x');
  });

  it('a folder: its images (any case of extension, not recursive), sorted, absolute', async () => {
    const rel = path.relative(process.cwd(), images);
    expect(await listImageFiles(rel, 'image folder')).toEqual(['a.png', 'b.JPG', 'c.webp'].map((n) => path.join(images, n)));
  });

  it('a glob, and a single image file', async () => {
    expect(await listImageFiles(path.join(images, '**', '*.jpg'), 'image folder')).toEqual([path.join(images, 'nested', 'd.jpg')]);
    expect(await listImageFiles(path.join(images, 'a.png'), 'image folder')).toEqual([path.join(images, 'a.png')]);
  });

  it('errors name the list and the path', async () => {
    const missing = path.join(dir, 'missing');
    await expect(listImageFiles(missing, 'calibration folder')).rejects.toThrow(`calibration folder ${missing} does not exist`);
    await expect(listImageFiles(path.join(dir, 'no-images'), 'image folder')).rejects.toThrow(
      /^image folder .*no-images has no images \(\.jpg /,
    );
    await expect(listImageFiles(path.join(dir, 'none-*.png'), 'image folder')).rejects.toThrow(/matches no files/);
    await expect(listImageFiles(missing, 'x')).rejects.toBeInstanceOf(ImageListError);
  });

  it('folderOnly: paths as given, no glob, and a missing folder cannot be read', async () => {
    const rel = path.relative(process.cwd(), images);
    expect(await listImageFiles(rel, 'calibration folder', { folderOnly: true })).toEqual(
      ['a.png', 'b.JPG', 'c.webp'].map((n) => path.join(rel, n)),
    );
    await expect(listImageFiles(path.join(dir, 'missing'), 'calibration folder', { folderOnly: true })).rejects.toThrow(
      /^calibration folder .*missing cannot be read: ENOENT/,
    );
    await expect(listImageFiles(path.join(images, '*.png'), 'calibration folder', { folderOnly: true })).rejects.toThrow(/cannot be read/);
  });
});

describe('writeFileAtomic', () => {
  it('replaces a file whole, creates missing folders, applies the mode to a new file and leaves no temp file', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'atomic-'));
    try {
      const file = path.join(dir, 'sub', 'settings.json');
      await writeFileAtomic(file, 'first', { mode: 0o600 });
      expect(await readFile(file, 'utf8')).toBe('first');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      await writeFileAtomic(file, new Uint8Array([104, 105]));
      expect(await readFile(file, 'utf8')).toBe('hi');
      expect(await readdir(path.join(dir, 'sub'))).toEqual(['settings.json']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('leaves the old file and no temp file when the rename fails', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'atomic-'));
    try {
      const target = path.join(dir, 'occupied');
      await mkdir(path.join(target, 'child'), { recursive: true }); // a non-empty directory cannot be renamed over
      await expect(writeFileAtomic(target, 'data')).rejects.toThrow();
      expect(await readdir(dir)).toEqual(['occupied']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('round2', () => {
  it('rounds to 2 decimals', () => {
    expect([round2(1.234), round2(1.235001), round2(-0.004), round2(12)]).toEqual([1.23, 1.24, -0, 12]);
  });
});

describe('LogThrottle', () => {
  it('the first line of a key, then at most one per interval, each key on its own', () => {
    let now = 1_000;
    const t = new LogThrottle(60_000, () => now);
    expect(t.shouldLog('a')).toBe(true);
    expect(t.shouldLog('b')).toBe(true);
    now += 59_999;
    expect(t.shouldLog('a')).toBe(false);
    now += 1;
    expect(t.shouldLog('a')).toBe(true);
    expect(t.shouldLog('a')).toBe(false);
    expect(t.shouldLog('b')).toBe(true);
  });

  it('mark makes the first line wait an interval; reset lets the next one through', () => {
    let now = 0;
    const t = new LogThrottle(5_000, () => now);
    t.mark('progress');
    expect(t.shouldLog('progress')).toBe(false);
    now = 5_000;
    expect(t.shouldLog('progress')).toBe(true);
    expect(t.shouldLog('progress')).toBe(false);
    t.reset('progress');
    expect(t.shouldLog('progress')).toBe(true);
  });

  it('uses Date.now by default', () => {
    const t = new LogThrottle(60_000);
    expect(t.shouldLog('k')).toBe(true);
    expect(t.shouldLog('k')).toBe(false);
  });
});
