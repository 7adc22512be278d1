/**
 * Bad frames, generated: random bytes, JPEGs and PNGs truncated at many offsets or with flipped bytes,
 * and decompression bombs (a header patched to 60000×60000, a real 20000×20000 PNG that compresses to
 * a few hundred KB). The preprocessor for the shipped model's input classifies each or refuses it with
 * FrameDecodeError / FrameTooLargeError, never another error, with memory bounded; then the same kinds
 * of frames go through the in-process daemon, which counts each in
 * frames_dropped_total{reason="corrupt"} and stays online. Seeded, so a failure repeats.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { Daemon } from '../../src/daemon/index.js';
import { createPreprocessor, FrameDecodeError, FrameTooLargeError, type InputSpec } from '../../src/vision/index.js';
import { root } from '../helpers/build.js';
import { freePort, startBroker, type TestBroker } from '../helpers/broker.js';
import { fakeCamera, fakeEngine, fakeModel } from '../helpers/fake-daemon.js';
import { mulberry32 } from '../../src/util/index.js';

const SEED = 0xf4a3e5;

function rng(seed: number) {
  const next = mulberry32(seed);
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => int(256))) };
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * A real, valid grey PNG of `size`×`size` of one colour, deflated row by row (a 20000×20000 one is
 * 400 MB of pixels in about 1 MB): the bomb a camera folder or a malicious upload could hold.
 */
async function solidPng(size: number, grey = 128): Promise<Buffer> {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), compression, filter, interlace 0
  const row = Buffer.alloc(1 + size, grey);
  row[0] = 0; // filter: none
  const rows = Buffer.concat(Array.from({ length: 64 }, () => row));
  const deflate = zlib.createDeflate({ level: 1 });
  const out: Buffer[] = [];
  deflate.on('data', (d: Buffer) => out.push(d));
  const done = new Promise((resolve) => deflate.once('end', resolve));
  for (let y = 0; y < size; y += 64) {
    if (!deflate.write(rows.subarray(0, Math.min(64, size - y) * row.length))) await new Promise((r) => deflate.once('drain', r));
  }
  deflate.end();
  await done;
  return Buffer.concat([PNG_SIGNATURE, pngChunk('IHDR', ihdr), pngChunk('IDAT', Buffer.concat(out)), pngChunk('IEND', Buffer.alloc(0))]);
}

/** A PNG whose IHDR says `w`×`h` (the CRC recomputed, so the header is valid) over the small image's data. */
function patchPng(png: Buffer, w: number, h: number): Buffer {
  const out = Buffer.from(png);
  // signature (8), length (4), "IHDR" (4), then width and height; CRC over type+data at 8+4+4+13.
  out.writeUInt32BE(w, 16);
  out.writeUInt32BE(h, 20);
  out.writeUInt32BE(zlib.crc32(out.subarray(12, 29)) >>> 0, 29);
  return out;
}

/** A JPEG whose SOF0/SOF2 says `w`×`h` over the small image's data. */
function patchJpeg(jpeg: Buffer, w: number, h: number): Buffer {
  const out = Buffer.from(jpeg);
  for (let i = 2; i < out.length - 9; ) {
    if (out[i] !== 0xff) throw new Error(`not a marker at ${i}`);
    const marker = out[i + 1]!;
    const len = out.readUInt16BE(i + 2);
    if (marker === 0xc0 || marker === 0xc2) {
      out.writeUInt16BE(h, i + 5);
      out.writeUInt16BE(w, i + 7);
      return out;
    }
    i += 2 + len;
  }
  throw new Error('no SOF marker');
}

interface Case {
  kind: string;
  data: Buffer;
  /** Must be refused as too large (its header declares more than the limit). */
  bomb?: boolean;
}

let jpeg: Buffer;
let png: Buffer;
const cases: Case[] = [];

beforeAll(async () => {
  // As the daemon does (daemon/index.ts): sharp's decoded-image cache would blur the memory measure.
  sharp.cache(false);
  const noise = {
    width: 320,
    height: 240,
    channels: 3 as const,
    background: '#000',
    noise: { type: 'gaussian' as const, mean: 128, sigma: 40 },
  };
  jpeg = await sharp({ create: noise }).jpeg({ quality: 80 }).toBuffer();
  png = await sharp({ create: noise }).png({ compressionLevel: 1 }).toBuffer();
  const r = rng(SEED);
  for (let i = 0; i < 80; i++) {
    const prefix = [Buffer.alloc(0), Buffer.from([0xff, 0xd8, 0xff]), PNG_SIGNATURE][i % 3]!;
    cases.push({ kind: 'random bytes', data: Buffer.concat([prefix, r.bytes(1 + r.int(i < 60 ? 512 : 16_384))]) });
  }
  for (const [kind, image] of [
    ['truncated JPEG', jpeg],
    ['truncated PNG', png],
  ] as const) {
    const offsets = [1, 2, 3, 4, 8, 16, 33, 64, 100, 200];
    for (let k = 1; k < 60; k++) offsets.push(Math.floor((image.length * k) / 60));
    offsets.push(image.length - 2, image.length - 1);
    for (const at of offsets) cases.push({ kind, data: image.subarray(0, at) });
  }
  for (const [kind, image, count] of [
    ['JPEG, bytes flipped', jpeg, 120],
    ['PNG, bytes flipped', png, 40],
  ] as const) {
    for (let i = 0; i < count; i++) {
      const copy = Buffer.from(image);
      for (let n = 1 + r.int(8); n > 0; n--) copy[2 + r.int(copy.length - 2)]! ^= 1 + r.int(255);
      cases.push({ kind, data: copy });
    }
  }
  cases.push(
    { kind: 'bomb', data: patchPng(png, 60_000, 60_000), bomb: true },
    { kind: 'bomb', data: patchJpeg(jpeg, 60_000, 60_000), bomb: true },
    { kind: 'bomb', data: patchJpeg(jpeg, 65_500, 65_500), bomb: true }, // libjpeg's largest
    { kind: 'bomb', data: await solidPng(20_000), bomb: true },
    // Declares less than the limit, holds far less data: truncated, refused while decoding.
    { kind: 'bomb (under the limit)', data: patchPng(png, 6000, 6000) },
    { kind: 'bomb (under the limit)', data: patchJpeg(jpeg, 6000, 6000) },
  );
});

const manifestInput = JSON.parse(readFileSync(path.join(root, 'models', 'inception-v2.json'), 'utf8')).input as InputSpec;

describe('fuzzed frames through the preprocessor', () => {
  it('each is classified or refused with FrameDecodeError/FrameTooLargeError, and memory stays bounded', async () => {
    const pre = createPreprocessor(manifestInput);
    const size = 3 * manifestInput.width * manifestInput.height;
    // Warm up (sharp's thread pool and libvips' buffers), then measure growth from there.
    for (let i = 0; i < 5; i++) await pre(jpeg);
    const baseline = process.memoryUsage.rss();
    let peak = baseline;
    const counts: Record<string, Record<string, number>> = {};
    for (const [i, c] of cases.entries()) {
      let outcome: string;
      try {
        const { tensor } = await pre(c.data);
        expect(tensor.data.length).toBe(size);
        expect(tensor.data.every(Number.isFinite), `case ${i} (${c.kind}): a non-finite value`).toBe(true);
        outcome = 'classified';
      } catch (err) {
        const known = err instanceof FrameDecodeError || err instanceof FrameTooLargeError;
        expect(known, `case ${i} (${c.kind}): ${(err as Error)?.stack}`).toBe(true);
        outcome = (err as Error).name;
      }
      if (c.bomb) expect(outcome, `case ${i} (${c.kind})`).toBe('FrameTooLargeError');
      counts[c.kind] ??= {};
      counts[c.kind]![outcome] = (counts[c.kind]![outcome] ?? 0) + 1;
      peak = Math.max(peak, process.memoryUsage.rss());
    }
    const growthMb = (peak - baseline) / 2 ** 20;
    console.log('fuzz-frames preprocessor:', JSON.stringify({ frames: cases.length, counts, rssGrowthMb: Math.round(growthMb) }));
    // The bound: one fully decoded frame at the 40 MP limit is 120 MB of RGB. A bomb that got decoded
    // would need 1.2 GB (20000²) to 10.8 GB (60000²); frames of a few hundred KB need a few MB each.
    // Measured here: about 25 MB. 100 MB leaves room for allocator noise and still fails on any bomb.
    expect(growthMb).toBeLessThan(100);
    expect(counts['random bytes']?.classified ?? 0).toBe(0);
    expect(counts.bomb).toEqual({ FrameTooLargeError: 4 });
    // Flipped bytes in entropy-coded data often still decode: both outcomes must occur, or the cases test little.
    expect(counts['JPEG, bytes flipped']?.classified).toBeGreaterThan(0);
    expect(counts['JPEG, bytes flipped']?.FrameDecodeError).toBeGreaterThan(0);
  });
});

describe('fuzzed frames through the daemon', () => {
  let broker: TestBroker;
  let work: string;
  beforeAll(async () => {
    broker = await startBroker();
    work = await mkdtemp(path.join(tmpdir(), 'fuzz-frames-'));
  });
  afterAll(async () => {
    await broker?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('counts every refused frame in frames_dropped_total{reason="corrupt"} and stays online', async () => {
    // The fake model's 8×8 input (what the daemon's preprocessor is built from); which frames it refuses.
    const pre = createPreprocessor(fakeModel.manifest.input);
    const bad: Buffer[] = [];
    for (const c of cases) {
      const refused = await pre(c.data).then(
        () => false,
        () => true,
      );
      if (refused) bad.push(c.data);
    }
    // A bomb under sharp's own default limit (268 MP) that the motion gate decodes before preprocessing.
    // White: unlike the good frames' thumbnails, so the gate does not take it for a still scene.
    bad.push(await solidPng(16_000, 250));
    const red = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#c02020' } })
      .jpeg()
      .toBuffer();
    const green = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#20a040' } })
      .jpeg()
      .toBuffer();
    // Bad frames in runs of up to 5, a good one after each run; good ones alternate in colour so that
    // the motion gate (on, to run its decoding too) lets each through.
    const sequence: Buffer[] = [];
    let good = 0;
    for (let i = 0; i < bad.length; i++) {
      sequence.push(bad[i]!);
      if (i % 5 === 4 || i === bad.length - 1) sequence.push(good++ % 2 ? red : green);
    }
    const httpPort = await freePort();
    const env: NodeJS.ProcessEnv = {
      INCEPTIOND_STATE_DIR: path.join(work, 'state'),
      INCEPTIOND_DEVICE_ID: 'fuzz',
      INCEPTIOND_MQTT_URL: broker.url,
      INCEPTIOND_MQTT_BASE_TOPIC: 'fuzz/frames',
      INCEPTIOND_CAPTURE_BACKEND: 'files',
      INCEPTIOND_CAPTURE_FILES_PATH: work,
      INCEPTIOND_CAPTURE_INTERVAL_MS: '0',
      INCEPTIOND_MOTION_ENABLED: 'true',
      INCEPTIOND_MOTION_THRESHOLD: '0.02',
      INCEPTIOND_HTTP_ENABLED: 'true',
      INCEPTIOND_HTTP_HOST: '127.0.0.1',
      INCEPTIOND_HTTP_PORT: String(httpPort),
      INCEPTIOND_METRICS_INTERVAL_SEC: '0',
      INCEPTIOND_LOG_LEVEL: 'fatal',
    };
    const config = loadConfig({ env, checkFiles: false }).config;
    const baseline = process.memoryUsage.rss();
    const daemon = await Daemon.start(config, pino({ level: 'silent' }), {
      overrides: {
        prepareModel: async () => fakeModel,
        createEngine: async () => fakeEngine(),
        createSource: (s) => fakeCamera(s.id, (n) => sequence[n - 1] ?? (n % 2 ? red : green)),
      },
    });
    try {
      // Frames are handled in order: once the Result of the frame after the last bad one exists, every
      // bad frame has been through the pipeline.
      await daemon.waitForResults(good + 1);
      const peek = daemon.metricsPeek();
      expect(peek.drops.corrupt).toBe(bad.length);
      expect(peek.gated).toBe(0);
      const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('inceptiond_frames_dropped_total{') && l.includes('reason="corrupt"'));
      expect(line, text.slice(0, 2000)).toMatch(new RegExp(`source="default".* ${bad.length}$|reason="corrupt".*\\} ${bad.length}$`));
      expect(daemon.statusPayload()).toMatchObject({ state: 'online' });
      expect(daemon.health()).toMatchObject({ healthy: true });
      console.log(
        'fuzz-frames daemon:',
        JSON.stringify({
          frames: sequence.length,
          bad: bad.length,
          corruptCounted: peek.drops.corrupt,
          good,
          rssGrowthMb: Math.round((process.memoryUsage.rss() - baseline) / 2 ** 20),
        }),
      );
    } finally {
      await daemon.stop('test done');
    }
  });
});
