import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import type { MotionConfig } from '../../src/config/index.js';
import { MotionGate } from '../../src/daemon/motion-gate.js';

const W = 320;
const H = 240;

/** Deterministic pseudo-random numbers in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/** A camera-like scene: mid-grey gradients with some texture, so a brightness offset does not clip. */
function sceneRaw(): Buffer {
  const raw = Buffer.alloc(W * H * 3);
  for (let y = 0, p = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const base = 70 + (60 * x) / W + (40 * y) / H + 15 * Math.sin(x / 9) * Math.cos(y / 7);
      for (let c = 0; c < 3; c++, p++) raw[p] = Math.round(base + 10 * c);
    }
  }
  return raw;
}

function jpeg(raw: Buffer): Promise<Buffer> {
  return sharp(raw, { raw: { width: W, height: H, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

/** `raw` with every value moved by `offset`. */
function brighter(raw: Buffer, offset: number): Buffer {
  return Buffer.from(raw.map((v) => Math.max(0, Math.min(255, v + offset))));
}

let base: Buffer;
let baseJpeg: Buffer;
/** The scene with a bright object over a quarter of it. */
let withObject: Buffer;

beforeAll(async () => {
  base = sceneRaw();
  baseJpeg = await jpeg(base);
  withObject = await sharp(baseJpeg)
    .composite([{ input: { create: { width: W / 2, height: H / 2, channels: 3, background: '#f8f8f8' } }, left: 40, top: 30 }])
    .jpeg()
    .toBuffer();
});

function gate(over: Partial<MotionConfig> = {}): { gate: MotionGate; settings: MotionConfig } {
  const settings: MotionConfig = { enabled: true, threshold: 0.02, maxIntervalSec: 0, ...over };
  return { gate: new MotionGate(() => settings), settings };
}

describe('MotionGate', () => {
  it('infers the first frame, then gates the same frame', async () => {
    const { gate: g } = gate();
    expect(await g.decide(baseJpeg, 0)).toEqual({ infer: true, changed: 1, reason: 'first' });
    for (let t = 1; t <= 3; t++) expect(await g.decide(baseJpeg, t * 1000)).toEqual({ infer: false, changed: 0, reason: 'still' });
  });

  it('infers a clearly different frame', async () => {
    const { gate: g } = gate();
    await g.decide(baseJpeg, 0);
    const d = await g.decide(withObject, 1000);
    expect(d.infer).toBe(true);
    expect(d.reason).toBe('motion');
    expect(d.changed).toBeGreaterThan(0.2);
    expect(d.changed).toBeLessThan(0.3);
  });

  it('gates sensor noise below the pixel delta', async () => {
    const { gate: g } = gate({ threshold: 0.01 });
    await g.decide(baseJpeg, 0);
    const random = rng(7);
    for (let i = 1; i <= 3; i++) {
      const noisy = Buffer.from(base.map((v) => Math.max(0, Math.min(255, v + Math.round((random() - 0.5) * 24)))));
      const d = await g.decide(await jpeg(noisy), i * 1000);
      expect(d).toMatchObject({ infer: false, reason: 'still' });
      expect(d.changed).toBeLessThan(0.01);
    }
  });

  it('infers after maxIntervalSec without motion', async () => {
    const { gate: g } = gate({ maxIntervalSec: 60 });
    await g.decide(baseJpeg, 1_000);
    expect((await g.decide(baseJpeg, 60_999)).infer).toBe(false);
    expect(await g.decide(baseJpeg, 61_000)).toEqual({ infer: true, changed: 0, reason: 'interval' });
    // The interval counts from that inference.
    expect((await g.decide(baseJpeg, 120_999)).infer).toBe(false);
    expect((await g.decide(baseJpeg, 121_000)).infer).toBe(true);
    // A clock that went backwards does not hold inferences back.
    expect(await g.decide(baseJpeg, 5_000)).toMatchObject({ infer: true, reason: 'interval' });
  });

  it('never infers by time alone when maxIntervalSec is 0', async () => {
    const { gate: g } = gate({ maxIntervalSec: 0 });
    await g.decide(baseJpeg, 0);
    expect((await g.decide(baseJpeg, 365 * 86_400_000)).infer).toBe(false);
  });

  it('disabled: infers every frame without decoding it', async () => {
    const { gate: g } = gate({ enabled: false });
    // Not an image: decoding it would say 'undecodable', so 'disabled' shows that no decode was tried.
    const notImage = Buffer.from('not an image');
    for (let i = 0; i < 3; i++) expect(await g.decide(notImage, i)).toEqual({ infer: true, changed: 1, reason: 'disabled' });
  });

  it('compares with the last inferred frame, so a slow drift accumulates until it triggers', async () => {
    const { gate: g } = gate();
    const verdicts: boolean[] = [];
    for (let step = 0; step <= 6; step++) {
      // +8 grey levels a frame: each frame is within the pixel delta of the previous one.
      verdicts.push((await g.decide(await jpeg(brighter(base, 8 * step)), step * 1000)).infer);
    }
    // Inferred at 0, gated at +8 and +16, inferred at +24 (more than 20 from 0), then the same from +24.
    expect(verdicts).toEqual([true, false, false, true, false, false, true]);
  });

  it('infers a frame it cannot decode, so preprocessing reports it', async () => {
    const { gate: g } = gate();
    await g.decide(baseJpeg, 0);
    expect(await g.decide(Buffer.from('garbage'), 1)).toEqual({ infer: true, changed: 1, reason: 'undecodable' });
    expect((await g.decide(Buffer.alloc(0), 2)).reason).toBe('undecodable');
    const truncated = baseJpeg.subarray(0, Math.floor(baseJpeg.length / 2));
    expect((await g.decide(truncated, 3)).reason).toBe('undecodable');
    // The reference is still the last good inferred frame.
    expect((await g.decide(baseJpeg, 4)).infer).toBe(false);
  });

  it('reads its settings on every call', async () => {
    const { gate: g, settings } = gate({ threshold: 0.5 });
    await g.decide(baseJpeg, 0);
    expect((await g.decide(withObject, 1)).infer).toBe(false);
    settings.threshold = 0.2;
    expect((await g.decide(withObject, 2)).infer).toBe(true);
    // Disabling drops the reference: enabled again, the next frame is a first frame.
    settings.enabled = false;
    await g.decide(baseJpeg, 3);
    settings.enabled = true;
    expect((await g.decide(withObject, 4)).reason).toBe('first');
  });

  it('reset: the next frame is inferred', async () => {
    const { gate: g } = gate();
    await g.decide(baseJpeg, 0);
    g.reset();
    expect((await g.decide(baseJpeg, 1)).reason).toBe('first');
  });

  it('decodes other formats and frames of another size', async () => {
    const { gate: g } = gate();
    const png = await sharp(base, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer();
    await g.decide(png, 0);
    expect((await g.decide(baseJpeg, 1)).infer).toBe(false);
    // The thumbnail is a fixed size: a larger frame of the same scene compares as the same.
    const large = await sharp(base, { raw: { width: W, height: H, channels: 3 } })
      .resize(W * 4, H * 4)
      .jpeg()
      .toBuffer();
    expect((await g.decide(large, 2)).infer).toBe(false);
  });
});
